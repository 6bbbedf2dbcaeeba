/**
 * The server's HTTP API (`docs/protocol.md`): threads and runs from the history store,
 * approvals, usage. Every body is generated from the server's Rust types: the history's in
 * `history.ts`, a decision's answer and usage in `protocol.ts`; here they get the names the
 * client's API uses.
 */
import { AgentClientError } from "./errors.js";
import type * as history from "./history.js";
import type * as protocol from "./protocol.js";
import type { Decision } from "./protocol.js";

/** A thread in a list (`GET /v1/threads`). Times are Unix milliseconds. */
export type ThreadSummary = history.ThreadSummary;

/** A page of threads, newest first; pass `next_cursor` back as `cursor` for the next page. */
export type ThreadPage = history.ThreadPage;

/** A run's status in the history. */
export type RunStatus = history.RunStatus;

/** A run as the history keeps it. */
export type RunRecord = history.RunSummary;

/** A run with its events and its sub-runs' events, in the order they were emitted. */
export type RunWithEvents = history.RunDetail;

/** A thread with its runs, oldest first. */
export type ThreadWithRuns = history.ThreadDetail;

/** A thread with its newest runs' events (a page), oldest first; `before` pages back. */
export type ThreadConversation = history.ThreadConversation;

/** A tool call waiting for a person's decision (`GET /v1/approvals`). */
export type PendingApproval = history.ApprovalRecord;

/** The answer to a decision (`POST /v1/runs/{run_id}/approvals/{tool_call_id}`). */
export type ApprovalOutcome = protocol.ApprovalOutcome;

/** A decision a person sends: `approve`, `edit` (with `arguments`), `reject`, `respond`. */
export type ApprovalDecision = Exclude<Decision, { decision: "expired" }>;

/** One budget's use this period: tokens or dollars. */
export type BudgetUse = protocol.TokenUse | protocol.CostUse;

/** What the user's runs spent this budget period (`GET /v1/me/usage`). */
export type Usage = protocol.Usage;

/** Calls the HTTP API of `base` with a bearer token. */
export class HttpApi {
  constructor(
    private readonly base: URL,
    private readonly token: () => Promise<string>,
    private readonly fetchImpl: typeof fetch,
  ) {}

  /** `method path` with an optional JSON body; the parsed answer (undefined for 204). */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = new URL(path, this.base);
    const headers: Record<string, string> = { authorization: `Bearer ${await this.token()}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await this.fetchImpl(url, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (error) {
      throw new AgentClientError("network", `${method} ${url.pathname}: ${String(error)}`);
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new AgentClientError(
        "protocol",
        `${method} ${url.pathname}: HTTP ${response.status} with a body that is not JSON`,
        { status: response.status },
      );
    }
    if (!response.ok) {
      const refusal = (parsed ?? {}) as { error?: string; message?: string };
      throw new AgentClientError(
        (refusal.error ?? "network") as AgentClientError["code"],
        refusal.message ?? `${method} ${url.pathname}: HTTP ${response.status}`,
        { status: response.status, details: parsed as Record<string, unknown> },
      );
    }
    return parsed as T;
  }
}
