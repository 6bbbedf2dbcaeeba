// A small MCP server on the official SDK (stdio), for tests/it/mcp.rs: tools whose behaviour
// a test controls. `pid` answers the server's process id (so a test sees a restart), `sleep`
// waits `ms` milliseconds (unless the client cancels the call: `cancelled` counts those), `crash` ends the process mid-call, `freeze` hangs it,
// `grow` adds a tool `grown` (the
// SDK tells the client its tool list changed), `big` answers `bytes` bytes of text, `calls` says
// how many `tools/call` requests reached the server before it (so a test sees that a call was
// refused before it was sent), `environment` answers its working directory and its whole
// environment (as JSON: {"cwd": ..., "env": {...}}).
//
// `--wait-for PATH`: the server fails at start (exit 1, before speaking MCP) until PATH exists,
// like a server whose dependency is not up yet.
import { existsSync, writeFileSync } from "node:fs";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const waitFor = process.argv.indexOf("--wait-for");
if (waitFor !== -1 && !existsSync(process.argv[waitFor + 1])) {
  console.error(`scripted: ${process.argv[waitFor + 1]} does not exist yet`);
  process.exit(1);
}

const server = new McpServer({ name: "scripted", version: "1.0.0" });
const text = (value) => ({ content: [{ type: "text", text: String(value) }] });
server.registerTool("pid", { description: "The server's process id." }, async () => text(process.pid));
let cancelled = 0;
server.registerTool(
  "sleep",
  {
    description: "Waits ms milliseconds, then says so; creates the file `started` (if given) as it begins.",
    inputSchema: { ms: z.number().int().min(0), started: z.string().optional() },
  },
  async ({ ms, started }, extra) => {
    if (started) writeFileSync(started, "");
    const stopped = await new Promise((done) => {
      const timer = setTimeout(() => done(false), ms);
      extra.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        done(true);
      });
    });
    if (stopped) cancelled += 1;
    return text(stopped ? "cancelled" : `slept ${ms} ms`);
  },
);
server.registerTool(
  "cancelled",
  {
    description: "How many sleeps the client cancelled, once at least `at_least` (waiting up to 5 s for them).",
    inputSchema: { at_least: z.number().int().min(0) },
  },
  async ({ at_least }) => {
    for (let waited = 0; cancelled < at_least && waited < 5000; waited += 50) {
      await new Promise((done) => setTimeout(done, 50));
    }
    return text(cancelled);
  },
);
server.registerTool("crash", { description: "Ends the server's process during the call." }, async () => {
  process.exit(3);
});
server.registerTool("freeze", { description: "Hangs the whole server (it answers nothing, not even a ping)." }, async () => {
  for (;;) {}
});
server.registerTool("grow", { description: "Adds the tool `grown`." }, async () => {
  server.registerTool("grown", { description: "Added by `grow`." }, async () => text("grown"));
  return text("added grown");
});
server.registerTool(
  "big",
  {
    description: "Answers `bytes` bytes of text.",
    inputSchema: { bytes: z.number().int().min(0).max(10_000_000) },
  },
  async ({ bytes }) => text("x".repeat(bytes)),
);
server.registerTool(
  "environment",
  { description: "The server's working directory and environment, as JSON." },
  async () => text(JSON.stringify({ cwd: process.cwd(), env: process.env })),
);
let toolCalls = 0;
server.registerTool("calls", { description: "How many tools/call requests reached the server before this one." }, async () =>
  text(toolCalls - 1),
);
const transport = new StdioServerTransport();
await server.connect(transport);
// Counted as they arrive, before the SDK checks their arguments against the tool's schema.
const receive = transport.onmessage;
transport.onmessage = (message, extra) => {
  if (message.method === "tools/call") toolCalls += 1;
  receive(message, extra);
};
