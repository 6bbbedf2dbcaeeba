// What the tests need around the client: real agent-server processes, tokens, and a TCP proxy
// that cuts connections.
//
// The server is started from, in this order: AGENT_IT_EXE (the Rust integration test binary,
// which serves when AGENT_IT_SERVE_ARGV holds the words: tests/it/ts_client.rs runs these
// tests that way), AGENT_SERVER_BIN (an agent-server binary), or a `cargo build -p
// agent-server` of this workspace.
import { spawn, execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const SECRET = "ts-client-tests-secret-0123456789abcdef";
const workspace = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

let built;
function serverCommand(argv) {
  if (process.env.AGENT_IT_EXE) {
    return {
      program: process.env.AGENT_IT_EXE,
      args: ["--exact", "process_support::child_server", "--nocapture", "--test-threads=1"],
      env: { AGENT_IT_SERVE_ARGV: argv.join("\n") },
    };
  }
  if (process.env.AGENT_SERVER_BIN) {
    return { program: process.env.AGENT_SERVER_BIN, args: argv, env: {} };
  }
  if (!built) {
    execFileSync("cargo", ["build", "-q", "-p", "agent-server"], { cwd: workspace, stdio: "inherit" });
    const meta = JSON.parse(
      execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: workspace }),
    );
    built = join(meta.target_directory, "debug", "agent-server");
  }
  return { program: built, args: argv, env: {} };
}

/** A temporary directory, removed by `cleanup()`. */
export function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), "agent-client-test-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts `agent-server serve` with a known secret, the synthetic agent and `extra` flags;
 * resolves with `{ url, port, stop(signal) }` once it listens.
 */
export async function startServer({ store, port = 0, extra = [] } = {}) {
  const argv = [
    "serve",
    "--addr",
    `127.0.0.1:${port}`,
    "--jwt-secret",
    SECRET,
    "--synthetic-agent",
    "--store",
    store ?? "none",
    "--shutdown-grace-secs",
    "1",
    ...extra,
  ];
  const { program, args, env } = serverCommand(argv);
  const child = spawn(program, args, {
    env: { ...process.env, ...env, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  // A test that fails or times out must not leave its server running.
  const reap = () => child.kill("SIGKILL");
  process.on("exit", reap);
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const lines = createInterface({ input: child.stdout });
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start: ${stderr}`)), 60_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code}: ${stderr}`));
    });
    lines.on("line", (line) => {
      const at = line.indexOf("agent-server listening on http://");
      if (at >= 0) {
        clearTimeout(timer);
        resolve(line.slice(at + "agent-server listening on http://".length).split(/\s/)[0]);
      }
    });
  });
  // Keep reading, so that a full pipe never stalls the server.
  lines.on("line", () => {});
  const exited = new Promise((resolve) => child.on("exit", resolve));
  exited.then(() => process.off("exit", reap));
  return {
    url: `http://${address}`,
    port: Number(address.split(":").pop()),
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

function base64url(value) {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value))
    .toString("base64")
    .replace(/=+$/, "")
    .replace(/\+/g, "-")
    .replace(/\//g, "_");
}

/** An HS256 token for `user`, valid for `seconds`. */
export function token(user, seconds = 3600) {
  const head = base64url({ alg: "HS256", typ: "JWT" });
  const body = base64url({ sub: user, exp: Math.floor(Date.now() / 1000) + seconds });
  const signature = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

/** A fresh user id. */
export function user(prefix = "user") {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target` (a port; changeable with `retarget`):
 * `cut()` destroys every connection through it at once, as a network drop does.
 */
export async function startProxy(targetPort) {
  let target = targetPort;
  const open = new Set();
  const stalled = new Set();
  let cuts = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    const pair = { client, upstream };
    open.add(pair);
    const drop = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop);
    upstream.on("error", drop);
    client.on("close", drop);
    upstream.on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    get cuts() {
      return cuts;
    },
    get connections() {
      return open.size;
    },
    retarget(port) {
      target = port;
    },
    /** Every connection through the proxy goes silent (nothing passes, nothing closes). */
    stall() {
      for (const { client, upstream } of open) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        stalled.add({ client, upstream });
      }
      open.clear();
    },
    cut() {
      cuts += 1;
      for (const { client, upstream } of open) {
        client.destroy();
        upstream.destroy();
      }
      open.clear();
    },
    close() {
      for (const { client, upstream } of [...open, ...stalled]) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Reads a run's events to its end, checking each is new; returns them. */
export async function collect(run) {
  const events = [];
  for await (const event of run.events) events.push(event);
  return events;
}

/** A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after). */
export async function freePort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** A private Redis (Debian's redis-server) on a free port, keeping nothing on disk. */
export async function startRedis() {
  const port = await freePort();
  const dir = tempDir();
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir.dir],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const reap = () => child.kill("SIGKILL");
  process.on("exit", reap);
  const lines = createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("redis-server did not start")), 20_000);
    child.on("error", (error) => reject(new Error(`redis-server: ${error.message} (apt-get install redis-server)`)));
    lines.on("line", (line) => {
      if (line.includes("Ready to accept connections")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  lines.on("line", () => {});
  const exited = new Promise((resolve) => child.on("exit", resolve));
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGKILL");
      await exited;
      process.off("exit", reap);
      dir.cleanup();
    },
  };
}
