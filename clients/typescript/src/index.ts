/**
 * `@agent-engine/client`: a typed client of the agent-engine server.
 *
 * ```ts
 * const client = new AgentClient({ url: "http://127.0.0.1:8080", token });
 * await client.connect();
 * const run = await client.run({ agent: "assistant", message: "What is 12*7?" });
 * for await (const event of run.events) console.log(event.type);
 * ```
 */
export { AgentClient } from "./client.js";
export type {
  AgentClientOptions,
  ConnectionState,
  Credentials,
  Notice,
  RunRequest,
} from "./client.js";
export { AgentClientError } from "./errors.js";
export type {
  ApprovalDecision,
  ApprovalOutcome,
  BudgetUse,
  PendingApproval,
  RunRecord,
  RunStatus,
  RunWithEvents,
  ThreadConversation,
  ThreadPage,
  ThreadSummary,
  ThreadWithRuns,
  Usage,
} from "./http.js";
export type {
  ApprovalRecord,
  ApprovalStatus,
  RunDetail,
  RunSummary,
  ThreadDetail,
} from "./history.js";
export { isTerminal } from "./run.js";
export type { EventOf, RunHandle, StreamEvent, TerminalEvent } from "./run.js";
export type { BackoffOptions } from "./backoff.js";
export * from "./protocol.js";
