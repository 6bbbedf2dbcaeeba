// The history API's bodies (docs/protocol.md, "History" and "Approvals") as TypeScript
// types. Generated from the Rust types of crates/history: do not edit. `cargo xtask
// ts-types` writes it again; tests/it/ts_types.rs fails when it differs.

import type { AgentEvent, JsonValue } from "./protocol.js";

/**
 * Where a run stands.
 */
export type RunStatus = "running" | "completed" | "failed" | "cancelled" | "interrupted" | "waiting_for_approval" | "waiting_for_budget";

/**
 * A thread, as listed.
 */
export type ThreadSummary = { 
/**
 * The thread.
 */
thread_id: string, 
/**
 * Its first message, shortened.
 */
title: string, 
/**
 * When its first run started (Unix ms).
 */
created_ms: number, 
/**
 * When its latest run started (Unix ms).
 */
updated_ms: number, };

/**
 * A page of the user's threads (`GET /v1/threads`), newest first.
 */
export type ThreadPage = { 
/**
 * The threads.
 */
threads: Array<ThreadSummary>, 
/**
 * Pass it back as `cursor` for the next page; null on the last.
 */
next_cursor: string | null, };

/**
 * A run, as listed.
 */
export type RunSummary = { 
/**
 * The run.
 */
run_id: string, 
/**
 * Its thread.
 */
thread_id: string, 
/**
 * The agent.
 */
agent: string, 
/**
 * The user's message that started it.
 */
message: string, 
/**
 * Where it stands.
 */
status: RunStatus, 
/**
 * The `agent_completed` result, when it completed.
 */
outcome: JsonValue | null, 
/**
 * The `agent_error` code, when it failed.
 */
error_code: string | null, 
/**
 * Token usage, for a model-backed run that completed.
 */
usage: JsonValue | null, 
/**
 * When it started (Unix ms).
 */
started_ms: number, 
/**
 * When it ended (Unix ms).
 */
finished_ms: number | null, };

/**
 * A thread with its runs, oldest first.
 */
export type ThreadDetail = { 
/**
 * Its runs.
 */
runs: Array<RunSummary>, 
/**
 * The thread.
 */
thread_id: string, 
/**
 * Its first message, shortened.
 */
title: string, 
/**
 * When its first run started (Unix ms).
 */
created_ms: number, 
/**
 * When its latest run started (Unix ms).
 */
updated_ms: number, };

/**
 * A run with its events in order (each as its wire frame, without the stream's `seq`).
 */
export type RunDetail = { 
/**
 * Its events, and its sub-runs' events, in the order they were emitted.
 */
events: Array<AgentEvent>, 
/**
 * The run.
 */
run_id: string, 
/**
 * Its thread.
 */
thread_id: string, 
/**
 * The agent.
 */
agent: string, 
/**
 * The user's message that started it.
 */
message: string, 
/**
 * Where it stands.
 */
status: RunStatus, 
/**
 * The `agent_completed` result, when it completed.
 */
outcome: JsonValue | null, 
/**
 * The `agent_error` code, when it failed.
 */
error_code: string | null, 
/**
 * Token usage, for a model-backed run that completed.
 */
usage: JsonValue | null, 
/**
 * When it started (Unix ms).
 */
started_ms: number, 
/**
 * When it ended (Unix ms).
 */
finished_ms: number | null, };

/**
 * A page of a thread's runs with their events.
 */
export type ThreadConversation = { 
/**
 * The thread's newest runs (before `before`, when asked), at most the page's `limit`,
 * oldest first, each with its events and its sub-runs' events.
 */
runs: Array<RunDetail>, 
/**
 * The thread has older runs: pass this back as `before` for the page of them; null
 * when these are its first.
 */
before: string | null, 
/**
 * The thread.
 */
thread_id: string, 
/**
 * Its first message, shortened.
 */
title: string, 
/**
 * When its first run started (Unix ms).
 */
created_ms: number, 
/**
 * When its latest run started (Unix ms).
 */
updated_ms: number, };

/**
 * Where an approval stands.
 */
export type ApprovalStatus = "pending" | "decided" | "expired" | "cancelled";

/**
 * An approval as a user lists it (`GET /v1/approvals`).
 */
export type ApprovalRecord = { 
/**
 * The paused run.
 */
run_id: string, 
/**
 * Its thread.
 */
thread_id: string, 
/**
 * The agent.
 */
agent: string, 
/**
 * The call.
 */
tool_call_id: string, 
/**
 * The tool.
 */
tool_name: string, 
/**
 * The arguments the agent asked for.
 */
arguments: JsonValue, 
/**
 * When it was requested (Unix ms).
 */
requested_ms: number, 
/**
 * When it expires (Unix ms).
 */
expires_ms: number, 
/**
 * Where it stands.
 */
status: ApprovalStatus, 
/**
 * The decision's name, once decided (`expired` for an expired one).
 */
decision: string | null, 
/**
 * When it was decided, expired or cancelled (Unix ms).
 */
decided_ms: number | null, };
