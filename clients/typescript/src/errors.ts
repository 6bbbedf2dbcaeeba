import type { ErrorCode } from "./protocol.js";

/**
 * A refusal from the server (an `error` frame, or an HTTP error body), or a failure of the
 * client itself (`code` `connection_lost`, `closed`, `unauthorized`, `network`).
 */
export class AgentClientError extends Error {
  /** The server's code (`thread_busy`, `run_not_found`, ...) or the client's. */
  readonly code: ErrorCode | "connection_lost" | "closed" | "network" | "protocol";
  /** The HTTP status, for HTTP refusals. */
  readonly status: number | undefined;
  /** Other fields of the refusal (a budget refusal's `budget`, `remaining`, `resets_at`). */
  readonly details: Record<string, unknown>;

  constructor(
    code: AgentClientError["code"],
    message: string,
    options: { status?: number; details?: Record<string, unknown> } = {},
  ) {
    super(message);
    this.name = "AgentClientError";
    this.code = code;
    this.status = options.status;
    this.details = options.details ?? {};
  }
}
