// Wire protocol v1 (docs/protocol.md) as TypeScript types.
// Generated from the Rust types of crates/agent-protocol and crates/core-context:
// do not edit. `cargo xtask ts-types` writes it again; tests/it/ts_types.rs fails
// when it differs from what the types give.

/** Any JSON value. */
export type JsonValue = number | string | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * The authenticated user. Comes from the verified token only, never from a message.
 */
export type UserId = string;

/**
 * A conversation; runs belong to a thread, and a thread belongs to one user.
 */
export type ThreadId = string;

/**
 * One execution of one agent.
 */
export type RunId = string;

/**
 * One WebSocket connection.
 */
export type ConnectionId = string;

/**
 * Names one life of a user's stream; `seq` restarts only under a new epoch.
 */
export type Epoch = string;

/**
 * A point in time that serialises as RFC 3339 UTC with microseconds
 * (`2026-11-24T10:00:00.123456Z`), so clients can measure delivery latency.
 */
export type Timestamp = string;

/**
 * The `type` and `data` of an event.
 */
export type EventKind = { "type": "agent_started", "data": { 
/**
 * The user's message.
 */
message: string, } } | { "type": "agent_thinking", "data": { 
/**
 * What the agent is thinking.
 */
reasoning: string, 
/**
 * 1-based step number within the run.
 */
step: number, } } | { "type": "tool_executing", "data": { 
/**
 * Pairs this event with its `tool_completed`.
 */
tool_call_id: string, 
/**
 * The tool.
 */
tool_name: string, 
/**
 * The arguments (sensitive values redacted, long values truncated).
 */
arguments: JsonValue, } } | { "type": "tool_completed", "data": { 
/**
 * The id of the matching `tool_executing`.
 */
tool_call_id: string, 
/**
 * The tool.
 */
tool_name: string, 
/**
 * The result, or an error object when `is_error` (redacted and truncated).
 */
result: JsonValue, 
/**
 * Whether the call failed.
 */
is_error: boolean, 
/**
 * How long the call took.
 */
duration_ms: number, } } | { "type": "agent_response_chunk", "data": { 
/**
 * The text to append.
 */
delta: string, } } | { "type": "agent_completed", "data": { 
/**
 * The agent's result.
 */
result: JsonValue, 
/**
 * How long the run took.
 */
duration_ms: number, 
/**
 * Token usage, for agents backed by a model.
 */
usage?: JsonValue | null, } } | { "type": "agent_error", "data": { 
/**
 * A machine-readable code such as `timeout`, `panic` or `agent_failed`.
 */
code: string, 
/**
 * A message for the user.
 */
message: string, } } | { "type": "agent_cancelled", "data": { 
/**
 * Why.
 */
reason: string, } } | { "type": "approval_requested", "data": { 
/**
 * The call waiting; its `tool_executing` follows when it is approved.
 */
tool_call_id: string, 
/**
 * The tool.
 */
tool_name: string, 
/**
 * The arguments the agent asked for (sensitive values redacted, long values truncated).
 */
arguments: JsonValue, 
/**
 * When the call is rejected as expired if nobody decides (RFC 3339).
 */
expires_at: Timestamp, } } | { "type": "approval_resolved", "data": { 
/**
 * The call decided.
 */
tool_call_id: string, 
/**
 * The decision.
 */
decision: string, } } | { "type": "message_received", "data": { 
/**
 * The user's message.
 */
message: string, } } | { "type": "budget_exhausted", "data": { 
/**
 * The budget in the way (`tokens`, `cost_usd`).
 */
budget: BudgetKind, 
/**
 * Used this period (tokens, or US dollars).
 */
used: Amount, 
/**
 * Allowed per period.
 */
limit: Amount, 
/**
 * When the next period begins (RFC 3339).
 */
resets_at: Timestamp, } };

/**
 * One event of one run, as emitted (before the bridge gives it a `seq`).
 */
export type AgentEvent = { 
/**
 * The run it happened in.
 */
run_id: RunId, 
/**
 * The parent run, for sub-runs.
 */
parent_run_id?: RunId | null, 
/**
 * The run's thread.
 */
thread_id: ThreadId, 
/**
 * The agent running.
 */
agent_name: string, 
/**
 * When the event was emitted.
 */
timestamp: Timestamp, } & EventKind;

/**
 * An event with its per-user sequence number: exactly one server-to-client event frame.
 */
export type SequencedEvent = { 
/**
 * Position in the user's stream; increases by exactly 1 per event within an epoch.
 */
seq: number, 
/**
 * The run it happened in.
 */
run_id: RunId, 
/**
 * The parent run, for sub-runs.
 */
parent_run_id?: RunId | null, 
/**
 * The run's thread.
 */
thread_id: ThreadId, 
/**
 * The agent running.
 */
agent_name: string, 
/**
 * When the event was emitted.
 */
timestamp: Timestamp, } & EventKind;

/**
 * The `type` and `data` of a thread's change.
 */
export type ThreadChange = { "type": "thread_renamed", "data": { 
/**
 * The title.
 */
title: string, } } | { "type": "thread_deleted", "data": Record<symbol, never> };

/**
 * A change to one of the user's threads.
 */
export type ThreadEvent = { 
/**
 * The thread.
 */
thread_id: ThreadId, 
/**
 * When.
 */
timestamp: Timestamp, } & ({ "type": "thread_renamed", "data": { 
/**
 * The title.
 */
title: string, } } | { "type": "thread_deleted", "data": Record<symbol, never> });

/**
 * A thread's change with its place in the user's stream: one server-to-client frame.
 */
export type SequencedThreadEvent = { 
/**
 * Position in the user's stream (shared with the runs' events).
 */
seq: number, 
/**
 * The thread.
 */
thread_id: ThreadId, 
/**
 * When.
 */
timestamp: Timestamp, } & ({ "type": "thread_renamed", "data": { 
/**
 * The title.
 */
title: string, } } | { "type": "thread_deleted", "data": Record<symbol, never> });

/**
 * The budget a user's runs used up.
 */
export type BudgetKind = "tokens" | "cost_usd";

/**
 * An amount of a budget: tokens, or US dollars.
 */
export type Amount = number | number;

/**
 * What a run refused for its user's budget (`budget_exceeded`) is told besides the message:
 * the budget in the way, what remains of it (nothing), and when it resets.
 */
export type Shortfall = { 
/**
 * The budget in the way.
 */
budget: BudgetKind, 
/**
 * What remains of it this period.
 */
remaining: Amount, 
/**
 * When the next period begins (RFC 3339).
 */
resets_at: Timestamp, };

/**
 * What was decided about a waiting tool call.
 */
export type Decision = { "decision": "approve" } | { "decision": "edit", 
/**
 * The arguments to run it with.
 */
arguments: JsonValue, } | { "decision": "reject", 
/**
 * Why, for the agent (and the model) to read.
 */
message?: string | null, } | { "decision": "respond", 
/**
 * The result the agent gets.
 */
message: string, } | { "decision": "expired" };

/**
 * A strategy for a message sent into a thread whose run is still live.
 */
export type Multitask = "reject" | "enqueue" | "interrupt" | "rollback" | "steer";

/**
 * The payload of `start_agent`.
 */
export type StartAgent = { 
/**
 * The agent's registered name.
 */
agent: string, 
/**
 * The user's message.
 */
message: string, 
/**
 * The thread to continue, if any.
 */
thread_id?: ThreadId, 
/**
 * Agent-specific options, handed to the agent as they are.
 */
input?: { [key in string]: JsonValue }, 
/**
 * What to do with the thread's live run, if it has one.
 */
multitask?: Multitask, };

/**
 * The payload of `cancel_run`.
 */
export type CancelRun = { 
/**
 * The run to cancel.
 */
run_id: RunId, };

/**
 * The payload of `resolve_approval`.
 */
export type ResolveApproval = { 
/**
 * The paused run.
 */
run_id: RunId, 
/**
 * The call waiting (its `approval_requested`'s `tool_call_id`).
 */
tool_call_id: string, } & ({ "decision": "approve" } | { "decision": "edit", 
/**
 * The arguments to run it with.
 */
arguments: JsonValue, } | { "decision": "reject", 
/**
 * Why, for the agent (and the model) to read.
 */
message?: string | null, } | { "decision": "respond", 
/**
 * The result the agent gets.
 */
message: string, } | { "decision": "expired" });

/**
 * A valid client frame. Serialising it gives its wire form.
 */
export type ClientFrame = { "type": "start_agent", 
/**
 * Echoed in the reply.
 */
request_id?: string, 
/**
 * What to run.
 */
payload: StartAgent, } | { "type": "cancel_run", 
/**
 * Echoed in an error reply.
 */
request_id?: string, 
/**
 * Which run.
 */
payload: CancelRun, } | { "type": "resolve_approval", 
/**
 * Echoed in an error reply.
 */
request_id?: string, 
/**
 * Which call, and the decision.
 */
payload: ResolveApproval, } | { "type": "ping" };

/** The `code` of an `error` frame (and of HTTP refusals' `error`). */
export type ErrorCode = "invalid_json" | "invalid_frame" | "unknown_type" | "missing_field" | "invalid_field" | "frame_too_large" | "binary_not_supported" | "rate_limited" | "run_not_found" | "approval_not_found" | "approval_already_decided" | "approval_expired" | "thread_waiting_for_approval" | "thread_busy" | "budget_exceeded" | "resume_failed" | "thread_not_found" | "shutting_down" | "unknown_agent" | "invalid_agent" | "too_many_runs" | "too_many_engines" | "engine_closed" | "internal_error" | "unauthorized" | "bad_request" | "too_many_connections" | "not_found" | "unavailable" | "origin_not_allowed" | "unsupported_media_type" | (string & {});

/**
 * Why a resume could not replay.
 */
export type ResumeFailure = "too_old" | "epoch_changed" | "seq_ahead" | "unknown";

/**
 * The result of a resume, as `connection_established.resume` reports it.
 */
export type ResumeStatus = { "status": "ok", 
/**
 * How many events were replayed.
 */
replayed: number, } | { "status": "failed", 
/**
 * Why.
 */
reason: ResumeFailure, 
/**
 * The oldest `seq` the log still holds (the next `seq` if the log is empty).
 */
oldest_seq: number, };

/**
 * A frame the server sends that is not part of the user's event stream.
 */
export type ServerFrame = { "type": "connection_established", 
/**
 * The connection.
 */
connection_id: ConnectionId, 
/**
 * The authenticated user.
 */
user_id: UserId, 
/**
 * The user's stream epoch.
 */
epoch: Epoch, 
/**
 * The last `seq` of the stream when the connection opened.
 */
last_seq: number, 
/**
 * The server's clock.
 */
server_time: Timestamp, 
/**
 * The resume outcome, when the client asked to resume.
 */
resume?: ResumeStatus | null, } | { "type": "run_accepted", 
/**
 * The request's id.
 */
request_id?: string | null, 
/**
 * The new run.
 */
run_id: RunId, 
/**
 * Its thread.
 */
thread_id: ThreadId, 
/**
 * Whether the run waits before it starts: behind its thread's running run (one run
 * per thread; `multitask`), or for one of the user's run slots.
 */
queued?: boolean, 
/**
 * A queued run's place in line: 1 when it is next (of its thread's waiting runs, or
 * of the user's queue).
 */
position?: number | null, 
/**
 * The message joined the thread's running run (`run_id` is that run's; `multitask`
 * `steer`): it shows there as `message_received`.
 */
steered?: boolean, } | { "type": "error", 
/**
 * The request's id, when known.
 */
request_id?: string | null, 
/**
 * What kind of problem.
 */
code: ErrorCode, 
/**
 * What was wrong, for a human.
 */
message: string, } | { "type": "pong", 
/**
 * The server's clock.
 */
server_time: Timestamp, };

/**
 * The body of every HTTP refusal: `{"error": code, "message": text}`.
 */
export type HttpError = { 
/**
 * What kind of refusal (`unauthorized`, `bad_request`, `too_many_connections`, ...).
 */
error: ErrorCode, 
/**
 * What was wrong, for a human.
 */
message: string, };

/**
 * `POST /dev/token` request body (served only when the server generated its secret).
 */
export type DevTokenRequest = { 
/**
 * The user to sign a token for.
 */
user: string, };

/**
 * `POST /dev/token` answer.
 */
export type DevTokenResponse = { 
/**
 * Its lifetime.
 */
expires_in_secs: number, 
/**
 * The signed JWT.
 */
token: string, 
/**
 * Its subject.
 */
user_id: UserId, };

/**
 * `POST /v1/runs/{run_id}/approvals/{tool_call_id}` answer: the decision was taken.
 */
export type ApprovalOutcome = { 
/**
 * The run.
 */
run_id: RunId, 
/**
 * The call decided.
 */
tool_call_id: string, 
/**
 * The decision taken (`approve`, `edit`, `reject`, `respond`).
 */
decision: string, 
/**
 * The run's calls still waiting for a decision.
 */
waiting: number, 
/**
 * Whether this decision resumed the run.
 */
resumed: boolean, };

/**
 * Tokens used this period, against the budget (`null`s without one).
 */
export type TokenUse = { 
/**
 * Used.
 */
used: number, 
/**
 * The budget.
 */
limit: number | null, 
/**
 * What is left of it (0 when it is spent).
 */
remaining: number | null, };

/**
 * Dollars spent this period, against the budget (`null`s without one).
 */
export type CostUse = { 
/**
 * Spent.
 */
used: number, 
/**
 * The budget.
 */
limit: number | null, 
/**
 * What is left of it (0 when it is spent).
 */
remaining: number | null, };

/**
 * `GET /v1/me/usage` answer: what the user's runs spent in the budget's current period.
 */
export type Usage = { 
/**
 * The budget's period (`day`, `week`, `month`).
 */
period: string, 
/**
 * When the period began (RFC 3339).
 */
period_start: string, 
/**
 * When the next period begins and the budget resets (RFC 3339).
 */
resets_at: string, 
/**
 * Prompt and answer tokens.
 */
tokens: TokenUse, 
/**
 * US dollars (calls of priced models).
 */
cost_usd: CostUse, 
/**
 * Model calls counted.
 */
calls: number, 
/**
 * Of those, calls of models without a price (counted in tokens only).
 */
unpriced_calls: number, };

/** An `error` frame; a `budget_exceeded` refusal also says which budget, what remains of it and when it resets. */
export type ErrorFrame = Extract<ServerFrame, { "type": "error" }> & Partial<Shortfall>;

/** The `type`s of the events of a user's stream. */
export const EVENT_TYPES = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_response_chunk", "agent_completed", "agent_error", "agent_cancelled", "approval_requested", "approval_resolved", "message_received", "budget_exhausted"] as const;

/** The `type`s of a user's stream's changes to threads (frames without a run). */
export const THREAD_TYPES = ["thread_renamed", "thread_deleted"] as const;

/** The `type`s of the server's control frames. */
export const CONTROL_TYPES = ["connection_established", "run_accepted", "error", "pong"] as const;

/** The `type`s of the events that end a run. */
export const TERMINAL_TYPES = ["agent_completed", "agent_error", "agent_cancelled"] as const;

/** The `code`s of `error` frames this version names. */
export const ERROR_CODES = ["invalid_json", "invalid_frame", "unknown_type", "missing_field", "invalid_field", "frame_too_large", "binary_not_supported", "rate_limited", "run_not_found", "approval_not_found", "approval_already_decided", "approval_expired", "thread_waiting_for_approval", "thread_busy", "budget_exceeded", "resume_failed", "thread_not_found", "shutting_down", "unknown_agent", "invalid_agent", "too_many_runs", "too_many_engines", "engine_closed", "internal_error", "unauthorized", "bad_request", "too_many_connections", "not_found", "unavailable", "origin_not_allowed", "unsupported_media_type"] as const;

/** The WebSocket close codes the server sends. */
export const CloseCode = {
  GoingAway: 1001,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  TryAgainLater: 1013,
  IdleTimeout: 4000,
  SlowConsumer: 4008,
  StreamReset: 4009,
} as const;

/** Close codes after which a client reconnects and resumes. */
export const RESUMABLE_CLOSE_CODES: readonly number[] = [1001, 1013, 4000, 4008, 4009];
