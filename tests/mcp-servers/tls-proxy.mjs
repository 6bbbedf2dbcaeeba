// An HTTPS front for an MCP server that speaks plain HTTP, for tests/it/mcp_https.rs:
// `node tls-proxy.mjs CERT KEY http://127.0.0.1:PORT` listens on a free port of 127.0.0.1 with
// the certificate CERT (PEM, with its key KEY) and forwards every request, streamed both ways
// (server-sent events included), to the target. It says "listening on port N" on stderr.
import fs from "node:fs";
import http from "node:http";
import https from "node:https";

const [certFile, keyFile, target] = process.argv.slice(2);
const tls = { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
const server = https.createServer(tls, (request, response) => {
  const upstream = http.request(new URL(request.url, target), {
    method: request.method,
    headers: request.headers,
  });
  upstream.on("response", (answer) => {
    response.writeHead(answer.statusCode, answer.headers);
    answer.pipe(response);
  });
  upstream.on("error", (error) => {
    response.writeHead(502, { "content-type": "text/plain" });
    response.end(`tls-proxy: ${error.message}`);
  });
  request.pipe(upstream);
});
server.listen(0, "127.0.0.1", () => {
  console.error(`listening on port ${server.address().port}`);
});
