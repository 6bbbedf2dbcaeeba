// One AG-UI run against agent-server with the reference client: @ag-ui/client's HttpAgent,
// which checks the event stream's rules as it reads it. For tests/it/agui_client.rs.
//
//   node run.mjs URL TOKEN THREAD_ID MESSAGE [FORWARDED_PROPS_JSON] [ABORT_AT_EVENT_TYPE]
//
// Prints JSON lines: {"event": …} for each event the client accepted, then
// {"done": {"result": …, "newMessages": […]}} or {"failed": "why"}.
import { HttpAgent } from "@ag-ui/client";

const [url, token, threadId, message, props, abortAt] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const agent = new HttpAgent({
  url,
  headers: token ? { Authorization: `Bearer ${token}` } : {},
  threadId,
  initialMessages: [{ id: "m1", role: "user", content: message }],
});
try {
  const { result, newMessages } = await agent.runAgent(
    { runId: `client-${threadId}`, forwardedProps: JSON.parse(props || "{}") },
    {
      onEvent: ({ event }) => {
        print({ event });
        if (abortAt && event.type === abortAt) agent.abortRun();
      },
    },
  );
  print({ done: { result: result ?? null, newMessages } });
} catch (error) {
  print({ failed: String((error && error.message) || error) });
}
