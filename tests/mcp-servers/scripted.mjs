// A small MCP server on the official SDK (stdio), for tests/it/mcp.rs: tools whose behaviour
// a test controls. `pid` answers the server's process id (so a test sees a restart), `sleep`
// waits `ms` milliseconds, `crash` ends the process mid-call.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

const server = new McpServer({ name: "scripted", version: "1.0.0" });
const text = (value) => ({ content: [{ type: "text", text: String(value) }] });
server.registerTool("pid", { description: "The server's process id." }, async () => text(process.pid));
server.registerTool(
  "sleep",
  { description: "Waits ms milliseconds, then says so.", inputSchema: { ms: z.number().int().min(0) } },
  async ({ ms }) => {
    await new Promise((done) => setTimeout(done, ms));
    return text(`slept ${ms} ms`);
  },
);
server.registerTool("crash", { description: "Ends the server's process during the call." }, async () => {
  process.exit(3);
});
await server.connect(new StdioServerTransport());
