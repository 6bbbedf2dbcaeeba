// An AG-UI run cut mid-way and continued with GET /agui/runs/{run_id} and Last-Event-ID, both
// halves read by the reference client (@ag-ui/client), which checks each stream's rules as it
// reads it. For tests/it/agui_continue.rs.
//
//   node continue.mjs BASE_URL TOKEN THREAD_ID MESSAGE PROPS_JSON CUT_TYPE CUT_COUNT
//
// Prints JSON lines: {"first": [...]} (the events the first response's reader handled before
// the cut), {"last_id": "..."}, {"second": [...]} and {"end": {"done": ...} | {"failed": ...}}.
import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";

const [base, token, threadId, message, props, cutType, cutCount] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const headers = { Authorization: `Bearer ${token}` };

// The SSE ids as they arrive (HttpAgent's parser keeps only the data).
const ids = [];
const recordingFetch = async (url, init) => {
  const response = await fetch(url, init);
  let buffer = "";
  const decoder = new TextDecoder();
  const tee = new TransformStream({
    transform(chunk, controller) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const id = block.split("\n").find((line) => line.startsWith("id: "));
        if (block.includes("data: ")) ids.push(id ? id.slice(4) : null);
      }
      controller.enqueue(chunk);
    },
  });
  return new Response(response.body.pipeThrough(tee), response);
};

const first = [];
const agent = new HttpAgent({
  url: `${base}/agui/synthetic`,
  headers,
  threadId,
  initialMessages: [{ id: "m1", role: "user", content: message }],
  fetch: recordingFetch,
});
let seen = 0;
let cut = false;
try {
  await agent.runAgent(
    { runId: "client-run", forwardedProps: JSON.parse(props) },
    {
      onEvent: ({ event }) => {
        // After the cut the client reports the abort as an event of its own: not the server's.
        if (cut) return;
        first.push(event);
        if (event.type === cutType && ++seen === Number(cutCount)) {
          cut = true;
          agent.abortRun();
        }
      },
    },
  );
} catch (error) {
  // An abort ends the first half; anything else is a failure of the test.
  if (!String(error?.name ?? error).includes("Abort")) throw error;
}
print({ first });
const runId = first.find((e) => e.name === "agent-engine.run").value.run_id;
const lastId = ids[first.length - 1];
print({ last_id: lastId });

// The second half: the same run, continued from the last event the first reader handled.
class ContinuingAgent extends HttpAgent {
  connect() {
    const query = new URLSearchParams({ threadId, runId: "client-run" });
    const url = `${base}/agui/runs/${encodeURIComponent(runId)}?${query}`;
    return transformHttpEventStream(
      runHttpRequest(() => fetch(url, { headers: { ...headers, "Last-Event-ID": lastId } })),
    );
  }
}
const second = [];
const again = new ContinuingAgent({ url: base, headers, threadId });
try {
  const { result } = await again.connectAgent(
    { runId: "client-run" },
    { onEvent: ({ event }) => second.push(event) },
  );
  print({ second });
  print({ end: { done: result ?? null } });
} catch (error) {
  print({ second });
  print({ end: { failed: String(error?.message ?? error) } });
}
