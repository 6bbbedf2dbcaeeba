// The client against real servers: runs end to end, connections cut many times, a resume
// the replay log cannot serve, a server killed mid-run, tokens, cancel, approvals and the
// user's whole stream.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { join } from "node:path";

import { AgentClient, AgentClientError, isTerminal } from "../dist/index.js";
import { canonical } from "../dist/run.js";
import { collect, startProxy, startRedis, startServer, tempDir, token, user } from "./support.mjs";

/** The notices that say something went wrong (not the drops and resumes of every day). */
const troubles = (notices) =>
  notices.filter((n) => n.type === "resume_failed" || n.type === "run_unrecoverable" || n.type === "error");

/** Reads `stream` (without ending it) up to the terminal event of `runId`. */
async function readUntilEnd(stream, runId) {
  const seen = [];
  for (;;) {
    const { value, done } = await stream.next();
    assert.ok(!done, "the stream ended early");
    seen.push(value);
    if (value.run_id === runId && isTerminal(value)) return seen;
  }
}

/** Waits until `check()` holds (5 s at most). */
async function until(check) {
  for (let i = 0; i < 250 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(check(), `timed out waiting for ${check}`);
}

/** The events of a run as the history keeps them, for comparing with what the client got. */
function shape(events) {
  // The history keeps each event's data with its keys sorted: compare them sorted.
  return events.map((e) => `${e.run_id} ${e.type} ${e.timestamp} ${canonical(e.data)}`);
}

/** Checks what a run's reader got: the history's events, each once, in order. */
async function assertExactlyTheHistory(client, run, events) {
  const record = await client.getRun(run.runId);
  assert.deepEqual(shape(events), shape(record.events), "the client's events are the run's, in order, each once");
  const seqs = events.filter((e) => e.seq !== undefined).map((e) => e.seq);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq ${seqs[i]} after ${seqs[i - 1]}`);
}

/** A server with a history store of its own for the tests of a `describe`, with `extra` flags. */
function serverForSuite(extra) {
  const suite = { server: undefined };
  let store;
  before(async () => {
    store = tempDir();
    suite.server = await startServer({ store: `sqlite://${join(store.dir, "history.db")}`, extra });
  });
  after(async () => {
    await suite.server.stop();
    store.cleanup();
  });
  return suite;
}

describe("one server", () => {
  const suite = serverForSuite(["--approve-tools", "calculator"]);

  test("a run end to end: typed events in order, its result, the history agrees", async () => {
    const client = new AgentClient({ url: suite.server.url, token: token(user()) });
    const states = [];
    client.onStateChange((s) => states.push(s));
    await client.connect();
    assert.equal(client.state, "open");
    const run = await client.run({
      agent: "synthetic",
      message: "go",
      input: { thinking: 2, tools: 3, chunks: 4 },
    });
    assert.match(run.runId, /^run_/);
    assert.match(run.threadId, /^thr_/);
    const events = await collect(run);
    const result = await run.result;
    assert.equal(events[0].type, "agent_started");
    assert.equal(events.at(-1), result);
    assert.equal(result.type, "agent_completed");
    assert.equal(events.filter((e) => e.type === "agent_thinking").length, 2);
    assert.equal(events.filter((e) => e.type === "agent_response_chunk").map((e) => e.data.delta).join(""),
      "chunk 1 chunk 2 chunk 3 chunk 4 ");
    const opened = events.filter((e) => e.type === "tool_executing").map((e) => e.data.tool_call_id);
    const closed = events.filter((e) => e.type === "tool_completed").map((e) => e.data.tool_call_id);
    assert.equal(opened.length, 3);
    assert.deepEqual(closed, opened);
    await assertExactlyTheHistory(client, run, events);
    client.close();
    assert.deepEqual(states, ["connecting", "open", "closed"]);
    // A closed client refuses at once, rather than wait for a connection that never comes.
    await assert.rejects(
      client.run({ agent: "synthetic", message: "late" }),
      (e) => e instanceof AgentClientError && e.code === "closed",
    );
  });

  test("runs in a thread: the thread is listed, renamed, opened with its runs' events, deleted", async () => {
    const name = user();
    const client = new AgentClient({ url: suite.server.url, token: token(name) });
    await client.connect();
    // Another tab of the user hears of the rename and the deletion, as notices.
    const tab = new AgentClient({ url: suite.server.url, token: token(name) });
    const changes = [];
    tab.onNotice((n) => {
      if (n.type === "thread_changed") changes.push([n.change.type, n.change.thread_id, n.change.data]);
    });
    await tab.connect();
    const first = await client.run({ agent: "synthetic", message: "first", input: { chunks: 2 } });
    assert.equal((await first.result).type, "agent_completed");
    const second = await client.run({ agent: "synthetic", message: "second", threadId: first.threadId });
    assert.equal(second.threadId, first.threadId);
    assert.equal((await second.result).type, "agent_completed");
    const page = await client.listThreads();
    assert.deepEqual(page.threads.map((t) => t.thread_id), [first.threadId]);
    await client.renameThread(first.threadId, "Sums");
    const opened = await client.openThread(first.threadId);
    assert.equal(opened.title, "Sums");
    assert.deepEqual(opened.runs.map((r) => [r.run_id, r.message, r.events.at(-1).type]), [
      [first.runId, "first", "agent_completed"],
      [second.runId, "second", "agent_completed"],
    ]);
    assert.equal(opened.before, null);
    // A page at a time, newest first: the page before the last names its first run.
    const newest = await client.openThread(first.threadId, { limit: 1 });
    assert.deepEqual(newest.runs.map((r) => r.run_id), [second.runId]);
    assert.equal(newest.before, second.runId);
    const older = await client.openThread(first.threadId, { limit: 1, before: newest.before });
    assert.deepEqual(older.runs.map((r) => r.run_id), [first.runId]);
    assert.equal(older.before, null);
    await assert.rejects(
      client.openThread(first.threadId, { before: "run_nope" }),
      (e) => e instanceof AgentClientError && e.status === 400 && /invalid cursor/.test(e.message),
    );
    await client.deleteThread(first.threadId);
    await assert.rejects(client.getThread(first.threadId), (e) => e instanceof AgentClientError && e.status === 404);
    for (let waited = 0; changes.length < 2 && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(changes, [
      ["thread_renamed", first.threadId, { title: "Sums" }],
      ["thread_deleted", first.threadId, {}],
    ]);
    client.close();
    tab.close();
  });

  test("a refused start names the server's code", async () => {
    const client = new AgentClient({ url: suite.server.url, token: token(user()) });
    await client.connect();
    await assert.rejects(
      client.run({ agent: "nope", message: "hi" }),
      (e) => e instanceof AgentClientError && e.code === "unknown_agent" && /nope/.test(e.message),
    );
    client.close();
  });

  test("cancel: the run ends with agent_cancelled", async () => {
    const client = new AgentClient({ url: suite.server.url, token: token(user()) });
    await client.connect();
    const run = await client.run({ agent: "synthetic", message: "wait", input: { chunks: 1, hang: true } });
    const seen = [];
    for await (const event of run.events) {
      seen.push(event.type);
      if (event.type === "agent_response_chunk") await run.cancel();
    }
    assert.equal(seen.at(-1), "agent_cancelled");
    assert.equal((await run.result).type, "agent_cancelled");
    client.close();
  });

  test("refusals without a pending run(): a frame too large rejects its run(); a cancel's refusal is a notice", async () => {
    const client = new AgentClient({ url: suite.server.url, token: token(user()) });
    const notices = [];
    client.onNotice((n) => notices.push(n));
    await client.connect();
    // Over the 64 KiB frame limit: the server cannot read the frame, so its refusal carries no
    // request_id; it answers the oldest request still waiting, this one.
    await assert.rejects(
      client.run({ agent: "synthetic", message: "x".repeat(70 * 1024) }),
      (e) => e instanceof AgentClientError && e.code === "frame_too_large",
    );
    const run = await client.run({ agent: "synthetic", message: "short", input: { chunks: 1 } });
    assert.equal((await run.result).type, "agent_completed");
    // The run has ended: cancelling it is refused, and nothing else waits for the answer.
    await client.cancel(run.runId);
    await until(() => notices.some((n) => n.type === "error"));
    const refusal = notices.find((n) => n.type === "error");
    assert.equal(refusal.code, "run_not_found");
    assert.match(refusal.requestId, /^c\d+$/);
    client.close();
  });

  test("a new view with replay: the server's log first, then live; reconnect() resumes", async () => {
    const name = user();
    const tab = new AgentClient({ url: suite.server.url, token: token(name) });
    await tab.connect();
    const earlier = await tab.run({ agent: "synthetic", message: "before", input: { chunks: 3 } });
    const before = await collect(earlier);
    const view = new AgentClient({ url: suite.server.url, token: token(name), replay: true });
    const notices = [];
    view.onNotice((n) => notices.push(n));
    const states = [];
    view.onStateChange((s) => states.push(s));
    const stream = view.events();
    await view.connect();
    // One state change to open: the switch to the log is not a reconnect.
    assert.deepEqual(states, ["connecting", "open"]);
    const replayed = notices.find((n) => n.type === "replayed");
    assert.ok(replayed && replayed.replayed >= before.length, JSON.stringify(notices));
    assert.deepEqual(shape(await readUntilEnd(stream, earlier.runId)), shape(before));
    // Dropped on purpose: reconnects at once and resumes, saying so; a run started meanwhile
    // in the other tab comes whole.
    view.reconnect();
    const later = await tab.run({ agent: "synthetic", message: "after", input: { chunks: 2 } });
    const after = await collect(later);
    assert.deepEqual(shape(await readUntilEnd(stream, later.runId)), shape(after));
    await until(() => notices.some((n) => n.type === "resumed"));
    const dropped = notices.find((n) => n.type === "disconnected");
    assert.ok(dropped && dropped.retryInMs >= 0, JSON.stringify(notices));
    view.close();
    tab.close();
  });

  test("approvals: the waiting call is listed, approved, and the run finishes", async () => {
    const client = new AgentClient({ url: suite.server.url, token: token(user()) });
    await client.connect();
    const run = await client.run({ agent: "assistant", message: "What is 12*7?" });
    let requested;
    for await (const event of run.events) {
      if (event.type === "approval_requested") {
        requested = event;
        const pending = await client.pendingApprovals();
        assert.deepEqual(pending.map((p) => [p.run_id, p.tool_call_id]), [[run.runId, event.data.tool_call_id]]);
        const outcome = await client.resolveApproval(run.runId, event.data.tool_call_id, { decision: "approve" });
        assert.equal(outcome.resumed, true);
      }
    }
    assert.ok(requested, "the calculator call waited for approval");
    const result = await run.result;
    assert.equal(result.type, "agent_completed");
    assert.match(JSON.stringify(result.data.result), /84/);
    assert.deepEqual(await client.pendingApprovals(), []);
    client.close();
  });

  test("a token the server refuses: connect() says so; getToken is asked again", async () => {
    const name = user();
    const refused = new AgentClient({ url: suite.server.url, token: token(name, -60) });
    await assert.rejects(refused.connect(), (e) => e instanceof AgentClientError && e.code === "unauthorized");
    assert.equal(refused.state, "closed");

    const handed = [];
    const client = new AgentClient({
      url: suite.server.url,
      getToken: () => {
        // The first token has expired: the server refuses it and the client asks again.
        const next = handed.length === 0 ? token(name, -60) : token(name, 3600);
        handed.push(next);
        return next;
      },
      backoff: { initialMs: 10, maxMs: 50 },
    });
    await client.connect();
    assert.equal(handed.length, 2);
    assert.equal(client.userId, name);
    client.close();
  });

  test("a token about to expire is renewed through getToken before it is used", async () => {
    const name = user();
    let calls = 0;
    const client = new AgentClient({
      url: suite.server.url,
      // Valid, but within the client's renewal margin (30 s) of its end.
      getToken: () => {
        calls += 1;
        return token(name, 20);
      },
    });
    await client.connect();
    assert.equal(calls, 1);
    await client.listThreads();
    await client.listThreads();
    assert.equal(calls, 3, "each use found the token about to expire and asked for another");
    client.close();
  });

  test("the user's whole stream shows another tab's runs", async () => {
    const name = user();
    const watcher = new AgentClient({ url: suite.server.url, token: token(name) });
    const tab = new AgentClient({ url: suite.server.url, token: token(name) });
    await watcher.connect();
    await tab.connect();
    const stream = watcher.events();
    const run = await tab.run({ agent: "synthetic", message: "x", input: { chunks: 2 } });
    const mine = await collect(run);
    const seen = [];
    for await (const event of stream) {
      seen.push(event);
      if (event.run_id === run.runId && isTerminal(event)) break;
    }
    assert.deepEqual(shape(seen), shape(mine));
    watcher.close();
    tab.close();
  });
});

describe("connections that drop", () => {
  const suite = serverForSuite(["--replay-max-events", "20"]);

  test("cut by a proxy many times mid-run: every event exactly once, in order", async () => {
    const proxy = await startProxy(suite.server.port);
    const client = new AgentClient({
      url: proxy.url,
      token: token(user()),
      backoff: { initialMs: 5, maxMs: 40 },
    });
    await client.connect();
    const runs = await Promise.all(
      [0, 1, 2].map(() =>
        client.run({ agent: "synthetic", message: "long", input: { chunks: 120, sleep_ms: 15 } }),
      ),
    );
    const reading = runs.map((run) => collect(run));
    let cutting = true;
    const cutter = (async () => {
      while (cutting) {
        await new Promise((r) => setTimeout(r, 80 + Math.random() * 120));
        if (cutting) proxy.cut();
      }
    })();
    const all = await Promise.all(reading);
    cutting = false;
    await cutter;
    assert.ok(proxy.cuts >= 10, `the proxy cut ${proxy.cuts} times`);
    for (const [i, events] of all.entries()) {
      const deltas = events.filter((e) => e.type === "agent_response_chunk").map((e) => e.data.delta);
      assert.deepEqual(deltas, Array.from({ length: 120 }, (_, k) => `chunk ${k + 1} `));
      assert.equal(events.at(-1).type, "agent_completed");
      await assertExactlyTheHistory(client, runs[i], events);
    }
    client.close();
    await proxy.close();
  });

  test("a connection gone silent is noticed by the heartbeat, dropped and resumed", async () => {
    const proxy = await startProxy(suite.server.port);
    const client = new AgentClient({
      url: proxy.url,
      token: token(user()),
      heartbeatMs: 150,
      backoff: { initialMs: 5, maxMs: 20 },
    });
    const states = [];
    client.onStateChange((s) => states.push(s));
    await client.connect();
    const run = await client.run({ agent: "synthetic", message: "long", input: { chunks: 80, sleep_ms: 15 } });
    const reading = collect(run);
    await new Promise((r) => setTimeout(r, 300));
    proxy.stall();
    const events = await reading;
    assert.ok(states.includes("reconnecting"), `${states}`);
    const deltas = events.filter((e) => e.type === "agent_response_chunk").map((e) => e.data.delta);
    assert.deepEqual(deltas, Array.from({ length: 80 }, (_, k) => `chunk ${k + 1} `));
    await assertExactlyTheHistory(client, run, events);
    client.close();
    await proxy.close();
  });

  test("a resume the replay log cannot serve: the history's snapshot, then the live tail", async () => {
    const proxy = await startProxy(suite.server.port);
    const client = new AgentClient({
      url: proxy.url,
      token: token(user()),
      backoff: { initialMs: 5, maxMs: 20 },
    });
    const notices = [];
    client.onNotice((n) => notices.push(n));
    await client.connect();
    const run = await client.run({ agent: "synthetic", message: "long", input: { chunks: 300, sleep_ms: 10 } });
    const reading = collect(run);
    await new Promise((r) => setTimeout(r, 300));
    // Away for longer than 20 events take: the replay log no longer holds what was missed.
    proxy.retarget(1);
    proxy.cut();
    await new Promise((r) => setTimeout(r, 1000));
    proxy.retarget(suite.server.port);
    const events = await reading;
    assert.deepEqual(
      troubles(notices).map((n) => [n.type, n.reason, n.runs]),
      [["resume_failed", "too_old", [run.runId]]],
    );
    assert.ok(notices.some((n) => n.type === "disconnected"));
    const recovered = events.filter((e) => e.recovered);
    assert.ok(recovered.length >= 20, `${recovered.length} events came from the history`);
    assert.ok(events.at(-1).seq !== undefined, "the run ended on the live stream");
    const deltas = events.filter((e) => e.type === "agent_response_chunk").map((e) => e.data.delta);
    assert.deepEqual(deltas, Array.from({ length: 300 }, (_, k) => `chunk ${k + 1} `));
    await assertExactlyTheHistory(client, run, events);
    client.close();
    await proxy.close();
  });
});

/**
 * A server on a store of its own behind a proxy, a client reading a long run through it, and
 * `restart(signal)`: the server stopped with `signal` and a successor on the same store put
 * behind the proxy. `done()` closes everything.
 */
async function longRunOnRestartableServer() {
  const store = tempDir();
  const db = `sqlite://${join(store.dir, "history.db")}`;
  let server = await startServer({ store: db });
  const proxy = await startProxy(server.port);
  const client = new AgentClient({ url: proxy.url, token: token(user()), backoff: { initialMs: 20, maxMs: 200 } });
  const notices = [];
  client.onNotice((n) => notices.push(n));
  await client.connect();
  const run = await client.run({ agent: "synthetic", message: "long", input: { chunks: 1000, sleep_ms: 10 } });
  return {
    client,
    run,
    notices,
    reading: collect(run),
    /** Stops the server with `signal`; resolves once a successor listens behind the proxy. */
    async restart(signal) {
      await server.stop(signal);
      server = await startServer({ store: db });
      proxy.retarget(server.port);
    },
    async done() {
      client.close();
      await proxy.close();
      await server.stop();
      store.cleanup();
    },
  };
}

/** The answer's chunks are 1, 2, 3, … each once, with no gap. */
function assertChunksInOrder(events) {
  const deltas = events.filter((e) => e.type === "agent_response_chunk").map((e) => e.data.delta);
  assert.ok(deltas.length > 0);
  assert.deepEqual(deltas, Array.from({ length: deltas.length }, (_, k) => `chunk ${k + 1} `));
}

test("a server killed mid-run: the client reconnects to its successor and ends the run from the history", async () => {
  const { client, run, notices, reading, restart, done } = await longRunOnRestartableServer();
  await new Promise((r) => setTimeout(r, 400));
  await restart("SIGKILL");
  const events = await reading;
  const end = await run.result;
  assert.equal(end.type, "agent_error");
  assert.equal(end.recovered, true);
  assert.equal(end.data.code, "interrupted");
  assert.deepEqual(troubles(notices).map((n) => [n.type, n.reason]), [["resume_failed", "epoch_changed"]]);
  assertChunksInOrder(events);
  assert.equal(events.filter(isTerminal).length, 1);
  // A killed server's history keeps what its writer had flushed: a prefix of what the client
  // delivered.
  const record = await client.getRun(run.runId);
  assert.equal(record.status, "interrupted");
  const delivered = shape(events.slice(0, -1));
  assert.deepEqual(shape(record.events), delivered.slice(0, record.events.length));
  await done();
});

test("two nodes on one Redis: the client moves between them mid-run and misses nothing", async () => {
  const redis = await startRedis();
  const nodes = await Promise.all([0, 1].map(() => startServer({ extra: ["--broker", redis.url] })));
  const proxy = await startProxy(nodes[0].port);
  const client = new AgentClient({ url: proxy.url, token: token(user()), backoff: { initialMs: 5, maxMs: 40 } });
  const notices = [];
  client.onNotice((n) => notices.push(n));
  await client.connect();
  const run = await client.run({ agent: "synthetic", message: "long", input: { chunks: 200, sleep_ms: 10 } });
  const reading = collect(run);
  for (let hop = 1; hop <= 6; hop++) {
    await new Promise((r) => setTimeout(r, 250));
    proxy.retarget(nodes[hop % 2].port);
    proxy.cut();
  }
  const events = await reading;
  assert.deepEqual(troubles(notices), [], "every move resumed");
  assert.ok(notices.some((n) => n.type === "resumed"), JSON.stringify(notices));
  assert.ok(events.every((e) => e.seq !== undefined));
  const deltas = events.filter((e) => e.type === "agent_response_chunk").map((e) => e.data.delta);
  assert.deepEqual(deltas, Array.from({ length: 200 }, (_, k) => `chunk ${k + 1} `));
  for (let i = 1; i < events.length; i++) assert.equal(events[i].seq, events[i - 1].seq + 1);
  assert.equal(events.at(-1).type, "agent_completed");
  client.close();
  await proxy.close();
  await Promise.all(nodes.map((n) => n.stop()));
  await redis.stop();
});

test("a server restarted gracefully mid-run: the run ends once, the client carries on on the new epoch", async () => {
  const { client, notices, reading, restart, done } = await longRunOnRestartableServer();
  await new Promise((r) => setTimeout(r, 300));
  // SIGTERM: the server drains, cancels what still runs after its grace (1 s), delivers it.
  const restarted = restart("SIGTERM");
  const events = await reading;
  await restarted;
  assert.equal(events.at(-1).type, "agent_cancelled");
  assert.equal(events.filter(isTerminal).length, 1);
  assertChunksInOrder(events);
  // The client finds the new server (a new epoch) and runs there.
  const next = await client.run({ agent: "synthetic", message: "again", input: { chunks: 2 } });
  assert.equal((await next.result).type, "agent_completed");
  assert.deepEqual(troubles(notices).map((n) => [n.type, n.reason, n.runs]), [["resume_failed", "epoch_changed", []]]);
  await done();
});
