// A run that pauses for an approval, answered with the reference client: @ag-ui/client's
// HttpAgent reads the interrupt outcome, refuses a next run that leaves the interrupt
// unanswered, and resumes the run with a resume entry. For tests/it/agui_approvals.rs.
//
//   node approve.mjs URL TOKEN THREAD_ID MESSAGE PAYLOAD_JSON
//
// Prints JSON lines: {"first": event} for the paused run's events, {"pending": interrupts},
// {"unanswered": error}, {"second": event} for the resumed run's, then {"done": {...}} or
// {"failed": "why"}.
import { HttpAgent } from "@ag-ui/client";

const [url, token, threadId, message, payload] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const agent = new HttpAgent({
  url,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
  threadId,
  initialMessages: [{ id: "m1", role: "user", content: message }],
});
try {
  await agent.runAgent(
    { runId: `first-${threadId}` },
    { onEvent: ({ event }) => print({ first: event }) },
  );
  print({ pending: agent.pendingInterrupts });
  try {
    await agent.runAgent({ runId: `skip-${threadId}` });
    print({ unanswered: "accepted" });
  } catch (error) {
    print({ unanswered: String((error && error.message) || error) });
  }
  const resume = agent.pendingInterrupts.map((interrupt) => ({
    interruptId: interrupt.id,
    status: "resolved",
    payload: JSON.parse(payload),
  }));
  const { result, newMessages } = await agent.runAgent(
    { runId: `second-${threadId}`, resume },
    { onEvent: ({ event }) => print({ second: event }) },
  );
  print({ done: { result: result ?? null, newMessages, pending: agent.pendingInterrupts } });
} catch (error) {
  print({ failed: String((error && error.message) || error) });
}
