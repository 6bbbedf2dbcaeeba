/**
 * The server's HTTP API (`docs/protocol.md`): threads and runs from the history store,
 * approvals, usage. Bodies are typed as the protocol document gives them.
 */
import { AgentClientError } from "./errors.js";
import type { AgentEvent, Decision, JsonValue, RunId, ThreadId } from "./protocol.js";

/** A thread in a list (`GET /v1/threads`). Times are Unix milliseconds. */
export interface ThreadSummary {
  thread_id: ThreadId;
  title: string;
  created_ms: number;
  updated_ms: number;
}

/** A page of threads, newest first; pass `next_cursor` back for the next page. */
export interface ThreadPage {
  threads: ThreadSummary[];
  next_cursor?: string;
}

/** A run's status in the history. */
export type RunStatus =
  | "running"
  | "waiting_for_approval"
  | "waiting_for_budget"
  | "completed"
  | "failed"
  | "cancelled"
  | "interrupted";

/** A run as the history keeps it. */
export interface RunRecord {
  run_id: RunId;
  thread_id: ThreadId;
  agent: string;
  message: string;
  status: RunStatus;
  outcome: JsonValue | null;
  error_code: string | null;
  usage: JsonValue | null;
  started_ms: number;
  finished_ms: number | null;
}

/** A run with its events and its sub-runs' events, in the order they were emitted. */
export interface RunWithEvents extends RunRecord {
  events: AgentEvent[];
}

/** A thread with its runs, oldest first. */
export interface ThreadWithRuns extends ThreadSummary {
  runs: RunRecord[];
}

/** A tool call waiting for a person's decision (`GET /v1/approvals`). */
export interface PendingApproval {
  run_id: RunId;
  thread_id: ThreadId;
  agent: string;
  tool_call_id: string;
  tool_name: string;
  arguments: JsonValue;
  requested_ms: number;
  expires_ms: number;
  status: string;
  decision: string | null;
  decided_ms: number | null;
}

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
