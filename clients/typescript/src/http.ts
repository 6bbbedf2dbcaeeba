/**
 * The server's HTTP API (`docs/protocol.md`): threads and runs from the history store,
 * approvals, usage. The history's bodies are generated from its Rust types (`history.ts`);
 * the few wrappers the server writes itself (a page of threads, a decision's answer, usage)
 * are typed here as the protocol document gives them.
 */
import { AgentClientError } from "./errors.js";
import type * as history from "./history.js";
import type { Decision, RunId } from "./protocol.js";

/** A thread in a list (`GET /v1/threads`). Times are Unix milliseconds. */
export type ThreadSummary = history.ThreadSummary;

/** A page of threads, newest first; pass `next_cursor` back for the next page. */
export interface ThreadPage {
  threads: ThreadSummary[];
  /** Absent or null on the last page. */
  next_cursor?: string | null;
}

/** A run's status in the history. */
export type RunStatus = history.RunStatus;

/** A run as the history keeps it. */
export type RunRecord = history.RunSummary;

/** A run with its events and its sub-runs' events, in the order they were emitted. */
export type RunWithEvents = history.RunDetail;

/** A thread with its runs, oldest first. */
export type ThreadWithRuns = history.ThreadDetail;

/** A tool call waiting for a person's decision (`GET /v1/approvals`). */
export type PendingApproval = history.ApprovalRecord;

/** The answer to a decision (`POST /v1/runs/{run_id}/approvals/{tool_call_id}`). */
export interface ApprovalOutcome {
  run_id: RunId;
  tool_call_id: string;
  decision: string;
  /** The run's calls still waiting. */
  waiting: number;
  /** Whether this decision resumed the run. */
  resumed: boolean;
}

/** A decision a person sends: `approve`, `edit` (with `arguments`), `reject`, `respond`. */
export type ApprovalDecision = Exclude<Decision, { decision: "expired" }>;

/** One budget's use this period. */
export interface BudgetUse {
  used: number;
  limit: number | null;
  remaining: number | null;
}

/** What the user's runs spent this budget period (`GET /v1/me/usage`). */
export interface Usage {
  period: string;
  period_start: string;
  resets_at: string;
  tokens: BudgetUse;
  cost_usd: BudgetUse;
  calls: number;
  unpriced_calls: number;
}

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
