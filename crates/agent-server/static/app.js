// Generated from clients/typescript/page/app.ts by `npm run bundle` there: do not edit.
"use strict";
(() => {
  var __create = Object.create;
  var __defProp = Object.defineProperty;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __getProtoOf = Object.getPrototypeOf;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
  var __require = /* @__PURE__ */ ((x) => typeof require !== "undefined" ? require : typeof Proxy !== "undefined" ? new Proxy(x, {
    get: (a, b) => (typeof require !== "undefined" ? require : a)[b]
  }) : x)(function(x) {
    if (typeof require !== "undefined") return require.apply(this, arguments);
    throw Error('Dynamic require of "' + x + '" is not supported');
  });
  var __copyProps = (to, from, except, desc) => {
    if (from && typeof from === "object" || typeof from === "function") {
      for (let key of __getOwnPropNames(from))
        if (!__hasOwnProp.call(to, key) && key !== except)
          __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
    }
    return to;
  };
  var __toESM = (mod, isNodeMode, target) => (target = mod != null ? __create(__getProtoOf(mod)) : {}, __copyProps(
    // If the importer is in node compatibility mode or this is not an ESM
    // file that has been converted to a CommonJS file using a Babel-
    // compatible transform (i.e. "__esModule" has not been set), then set
    // "default" to the CommonJS "module.exports" for node compatibility.
    isNodeMode || !mod || !mod.__esModule ? __defProp(target, "default", { value: mod, enumerable: true }) : target,
    mod
  ));
  var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

  // src/backoff.ts
  var Backoff = class {
    constructor(options = {}, random = Math.random) {
      this.random = random;
      __publicField(this, "attempt", 0);
      __publicField(this, "initialMs");
      __publicField(this, "maxMs");
      this.initialMs = Math.max(1, options.initialMs ?? 200);
      this.maxMs = Math.max(this.initialMs, options.maxMs ?? 1e4);
    }
    /** The next wait, in ms: uniform in [bound/2, bound], the bound doubling each time. */
    next() {
      const bound = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
      this.attempt += 1;
      return Math.round(bound / 2 + this.random() * bound / 2);
    }
    /** A connection held: the next failure waits the shortest time again. */
    reset() {
      this.attempt = 0;
    }
  };
  function sleep(ms, signal) {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      }
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  // src/errors.ts
  var AgentClientError = class extends Error {
    constructor(code, message, options = {}) {
      super(message);
      /** The server's code (`thread_busy`, `run_not_found`, ...) or the client's. */
      __publicField(this, "code");
      /** The HTTP status, for HTTP refusals. */
      __publicField(this, "status");
      /** Other fields of the refusal (a budget refusal's `budget`, `remaining`, `resets_at`). */
      __publicField(this, "details");
      this.name = "AgentClientError";
      this.code = code;
      this.status = options.status;
      this.details = options.details ?? {};
    }
  };

  // src/http.ts
  var HttpApi = class {
    constructor(base, token, fetchImpl) {
      this.base = base;
      this.token = token;
      this.fetchImpl = fetchImpl;
    }
    /** `method path` with an optional JSON body; the parsed answer (undefined for 204). */
    async request(method, path, body) {
      const url = new URL(path, this.base);
      const headers = { authorization: `Bearer ${await this.token()}` };
      if (body !== void 0) headers["content-type"] = "application/json";
      let response;
      try {
        response = await this.fetchImpl(url, {
          method,
          headers,
          body: body === void 0 ? null : JSON.stringify(body)
        });
      } catch (error) {
        throw new AgentClientError("network", `${method} ${url.pathname}: ${String(error)}`);
      }
      if (response.status === 204) return void 0;
      const text = await response.text();
      let parsed;
      try {
        parsed = text === "" ? void 0 : JSON.parse(text);
      } catch {
        throw new AgentClientError(
          "protocol",
          `${method} ${url.pathname}: HTTP ${response.status} with a body that is not JSON`,
          { status: response.status }
        );
      }
      if (!response.ok) {
        const refusal = parsed ?? {};
        throw new AgentClientError(
          refusal.error ?? "network",
          refusal.message ?? `${method} ${url.pathname}: HTTP ${response.status}`,
          { status: response.status, details: parsed }
        );
      }
      return parsed;
    }
  };

  // src/protocol.ts
  var THREAD_TYPES = ["thread_renamed", "thread_deleted"];
  var TERMINAL_TYPES = ["agent_completed", "agent_error", "agent_cancelled"];

  // src/queue.ts
  var AsyncQueue = class {
    constructor() {
      __publicField(this, "items", []);
      __publicField(this, "waiting");
      __publicField(this, "ended", false);
    }
    /** Adds an item; ignored once the queue has ended. */
    push(item) {
      if (this.ended) return;
      const waiting = this.waiting;
      if (waiting) {
        this.waiting = void 0;
        waiting({ value: item, done: false });
      } else {
        this.items.push(item);
      }
    }
    /** Ends the iteration after the items already queued. */
    end() {
      if (this.ended) return;
      this.ended = true;
      const waiting = this.waiting;
      if (waiting) {
        this.waiting = void 0;
        waiting({ value: void 0, done: true });
      }
    }
    next() {
      const item = this.items.shift();
      if (item !== void 0) return Promise.resolve({ value: item, done: false });
      if (this.ended) return Promise.resolve({ value: void 0, done: true });
      if (this.waiting) {
        return Promise.reject(new Error("AsyncQueue: one reader at a time"));
      }
      return new Promise((resolve) => {
        this.waiting = resolve;
      });
    }
    /** The reader stopped early (`break` in `for await`): nothing more is kept. */
    return() {
      this.ended = true;
      this.items.length = 0;
      return Promise.resolve({ value: void 0, done: true });
    }
    [Symbol.asyncIterator]() {
      return this;
    }
  };

  // src/run.ts
  function isTerminal(event) {
    return TERMINAL_TYPES.includes(event.type);
  }
  function eventKey(event) {
    const data = canonical(event.data ?? null);
    return `${event.run_id}\0${event.type}\0${event.timestamp}\0${data}`;
  }
  function canonical(value) {
    if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
    if (value !== null && typeof value === "object") {
      const entries = Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`);
      return `{${entries.join(",")}}`;
    }
    return JSON.stringify(value) ?? "null";
  }
  var EARLY_LIMIT = 1e4;
  var RunTracker = class {
    constructor(runId, threadId) {
      this.runId = runId;
      this.threadId = threadId;
      /**
       * How many of the run's events (its sub-runs' included) were delivered. The history keeps
       * them in the order they were emitted, which is the order they were delivered in, so the
       * history's events from this index on are the ones not delivered yet.
       */
      __publicField(this, "delivered", 0);
      /** Events that arrived before a handle claimed the run (run_accepted can come after them). */
      __publicField(this, "early", []);
      /** Live events held back while the history fills the gap of a failed resume. */
      __publicField(this, "held", []);
      /** Whether a failed resume is being recovered from the history. */
      __publicField(this, "recovering", false);
      /** Whether the terminal event was delivered. */
      __publicField(this, "ended", false);
      /** The handles' queues and results (a steered message's handle joins the run's). */
      __publicField(this, "handles", []);
    }
    /**
     * Makes a handle's queue and result. The first handle gets the events that came before it
     * at once; a later one (a message steered into the run) those from now on.
     */
    claim() {
      const events = new AsyncQueue();
      let settle;
      let fail;
      const result = new Promise((resolve, reject) => {
        settle = resolve;
        fail = reject;
      });
      result.catch(() => void 0);
      const handle = { queue: events, settle, fail };
      this.handles.push(handle);
      for (const event of this.early) this.push(handle, event);
      this.early = [];
      if (this.ended && this.handles.length > 1) {
        events.end();
        fail(new Error("the run ended before this handle joined it"));
      }
      return { events, result };
    }
    /**
     * Delivers a live event (the stream's `seq` already keeps those from repeating); returns
     * whether it was delivered. While recovering it is held back instead.
     */
    offer(event) {
      if (this.recovering) {
        this.held.push(event);
        return false;
      }
      return this.deliver(event);
    }
    /**
     * The history's events of the run (all of them, in order) after a failed resume: delivers
     * those not delivered yet, marked `recovered`, and returns them.
     */
    recover(history) {
      const missed = history.slice(this.delivered).map((e) => ({ ...e, recovered: true }));
      return missed.filter((event) => this.deliver(event));
    }
    /**
     * Ends recovering: the held live events are delivered, but for those the history had
     * (`known`: their keys); returns those delivered.
     */
    release(known) {
      this.recovering = false;
      const held = this.held;
      this.held = [];
      return held.filter((event) => !known.has(eventKey(event)) && this.deliver(event));
    }
    /** Delivers `event` at once, held events or not (the end the history reports). */
    deliver(event) {
      if (this.ended) return false;
      this.delivered += 1;
      if (this.handles.length > 0) for (const handle of this.handles) this.push(handle, event);
      else if (this.early.length < EARLY_LIMIT) this.early.push(event);
      if (event.run_id === this.runId && isTerminal(event)) this.ended = true;
      return true;
    }
    /** Ends a handle whose client closed before the run did. */
    abandon(error) {
      for (const handle of this.handles) {
        handle.queue.end();
        handle.fail(error);
      }
    }
    push(handle, event) {
      handle.queue.push(event);
      if (event.run_id === this.runId && isTerminal(event)) {
        handle.queue.end();
        handle.settle(event);
      }
    }
  };

  // src/socket.ts
  var wsPackage;
  async function openSocket(url, token, events, override) {
    const platform = override ?? globalThis.WebSocket;
    if (platform) {
      const withToken = new URL(url);
      withToken.searchParams.set("token", token);
      return openPlatform(platform, withToken, events);
    }
    wsPackage ?? (wsPackage = import("ws"));
    const { WebSocket: NodeWebSocket } = await wsPackage;
    let closed = false;
    const close = (code, reason, status) => {
      if (closed) return;
      closed = true;
      events.close(code, reason, status);
    };
    const socket = new NodeWebSocket(url, {
      headers: { authorization: `Bearer ${token}` },
      maxPayload: 64 * 1024 * 1024
    });
    socket.on("open", () => events.open());
    socket.on("message", (data, isBinary) => {
      if (!isBinary) events.message(data.toString());
    });
    socket.on("unexpected-response", (_request, response) => {
      const status = response.statusCode ?? 0;
      response.resume();
      socket.terminate();
      close(1006, `the server refused the connection (HTTP ${status})`, status);
    });
    socket.on("error", (error) => close(1006, error.message));
    socket.on("close", (code, reason) => close(code, reason.toString()));
    return {
      send: (text) => socket.send(text),
      close: (code, reason) => {
        if (socket.readyState === socket.CONNECTING) socket.terminate();
        else socket.close(code, reason);
      },
      terminate: () => socket.terminate()
    };
  }
  function openPlatform(Ctor, url, events) {
    const socket = new Ctor(url.toString());
    let closed = false;
    socket.addEventListener("open", () => events.open());
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string") events.message(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (closed) return;
      closed = true;
      events.close(event.code, event.reason);
    });
    return {
      send: (text) => socket.send(text),
      close: (code, reason) => socket.close(code, reason),
      // A browser has no way to drop a socket without the handshake: close it and stop
      // listening (the client treats it as gone already).
      terminate: () => {
        closed = true;
        socket.close();
      }
    };
  }

  // src/client.ts
  function expiresAt(token) {
    const part = token.split(".")[1];
    if (!part) return void 0;
    try {
      const json2 = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
      const exp = JSON.parse(json2).exp;
      return typeof exp === "number" ? exp * 1e3 : void 0;
    } catch {
      return void 0;
    }
  }
  var RENEW_BEFORE_MS = 3e4;
  var RECOVERY_DEADLINE_MS = 5e3;
  var AgentClient = class {
    constructor(options) {
      __publicField(this, "base");
      __publicField(this, "socketUrl");
      __publicField(this, "options");
      __publicField(this, "backoff");
      __publicField(this, "http");
      __publicField(this, "token");
      __publicField(this, "tokenRefused", false);
      __publicField(this, "current", "idle");
      __publicField(this, "stateListeners", /* @__PURE__ */ new Set());
      __publicField(this, "noticeListeners", /* @__PURE__ */ new Set());
      __publicField(this, "socket");
      __publicField(this, "open", false);
      __publicField(this, "epoch");
      __publicField(this, "lastSeq");
      __publicField(this, "userIdValue");
      __publicField(this, "stopped", new AbortController());
      __publicField(this, "openWaiters", []);
      __publicField(this, "replies", /* @__PURE__ */ new Map());
      /** The epoch whose log was replayed (option `replay`): each epoch's once. */
      __publicField(this, "replayedEpoch");
      /** The socket is being replaced by one that starts at the log (option `replay`). */
      __publicField(this, "rejoining", false);
      __publicField(this, "nextRequest", 1);
      __publicField(this, "trackers", /* @__PURE__ */ new Map());
      /** Sub-run → its top-level run. */
      __publicField(this, "topOf", /* @__PURE__ */ new Map());
      __publicField(this, "streams", /* @__PURE__ */ new Set());
      __publicField(this, "loop");
      if (!options || typeof options.url !== "string") {
        throw new TypeError("AgentClient: `url` (the server's base URL) is required");
      }
      if (typeof options.token !== "string" && typeof options.getToken !== "function") {
        throw new TypeError("AgentClient: give `token` or `getToken`");
      }
      this.options = options;
      const base = new URL(options.url);
      if (base.protocol === "ws:") base.protocol = "http:";
      if (base.protocol === "wss:") base.protocol = "https:";
      if (base.protocol !== "http:" && base.protocol !== "https:") {
        throw new TypeError(`AgentClient: \`url\` must be http(s) or ws(s), got ${base.protocol}`);
      }
      this.base = base;
      this.socketUrl = new URL("/ws", base);
      this.socketUrl.protocol = base.protocol === "https:" ? "wss:" : "ws:";
      this.backoff = new Backoff(options.backoff);
      const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
      this.http = new HttpApi(base, () => this.currentToken(), fetchImpl);
      this.token = options.token;
    }
    /** The connection's state now. */
    get state() {
      return this.current;
    }
    /** The signed-in user, once connected. */
    get userId() {
      return this.userIdValue;
    }
    /** Calls `listener` with each new connection state; returns the unsubscribe function. */
    onStateChange(listener) {
      this.stateListeners.add(listener);
      return () => this.stateListeners.delete(listener);
    }
    /** Calls `listener` with each notice; returns the unsubscribe function. */
    onNotice(listener) {
      this.noticeListeners.add(listener);
      return () => this.noticeListeners.delete(listener);
    }
    /**
     * Opens the stream; resolves once the server has said `connection_established`. Rejects
     * when the server refuses the token (and `getToken` gives no better one) or the client is
     * closed. Later drops are reconnected and resumed by themselves.
     */
    connect() {
      if (this.current === "closed") {
        return Promise.reject(new AgentClientError("closed", "the client is closed"));
      }
      const opened = this.whenOpen();
      this.loop ?? (this.loop = this.keepConnected());
      return opened;
    }
    /** Closes the connection for good: runs' iterations end, waiting calls reject. */
    close() {
      if (this.current === "closed") return;
      this.setState("closed");
      this.open = false;
      this.stopped.abort();
      this.socket?.close(1e3, "client closed");
      const closed = new AgentClientError("closed", "the client is closed");
      for (const waiter of this.openWaiters) waiter.reject(closed);
      this.openWaiters = [];
      for (const waiter of this.replies.values()) waiter.reject(closed);
      this.replies.clear();
      for (const tracker of this.trackers.values()) tracker.abandon(closed);
      this.trackers.clear();
      for (const stream of this.streams) stream.end();
      this.streams.clear();
    }
    /** Starts a run; resolves with its handle once the server accepted it. */
    async run(request) {
      if (!request || typeof request.agent !== "string" || request.agent === "") {
        throw new TypeError("run: `agent` (a registered agent's name) is required");
      }
      if (typeof request.message !== "string") {
        throw new TypeError("run: `message` must be a string");
      }
      const payload = { agent: request.agent, message: request.message };
      if (request.threadId !== void 0) payload.thread_id = request.threadId;
      if (request.input !== void 0) payload.input = request.input;
      if (request.multitask !== void 0) payload.multitask = request.multitask;
      const reply = await this.request({ type: "start_agent", payload });
      if (reply.type !== "run_accepted") {
        throw new AgentClientError("protocol", `start_agent answered with ${reply.type}`);
      }
      const tracker = this.trackerFor(reply.run_id, reply.thread_id);
      const { events, result } = tracker.claim();
      return {
        runId: reply.run_id,
        threadId: reply.thread_id,
        queued: reply.queued ?? false,
        steered: reply.steered ?? false,
        ...typeof reply.position === "number" ? { position: reply.position } : {},
        events,
        result,
        cancel: () => this.cancel(reply.run_id)
      };
    }
    /**
     * Asks the server to cancel `runId` (one of the user's runs, from any tab): the run then
     * ends with `agent_cancelled`. Resolves once asked; the server answers only a refusal
     * (`run_not_found`: the run already ended, or is not the user's), as an `error` notice.
     */
    async cancel(runId) {
      await this.send({ type: "cancel_run", request_id: `c${this.nextRequest++}`, payload: { run_id: runId } });
    }
    /**
     * Sends a frame as it is, once the connection is open (it waits while reconnecting). The
     * server answers most frames only to refuse them: a refusal comes as an `error` notice with
     * the frame's `request_id`.
     */
    async send(frame) {
      for (; ; ) {
        await this.whenOpen();
        const socket = this.socket;
        if (socket && this.open) {
          socket.send(JSON.stringify(frame));
          return;
        }
      }
    }
    /**
     * Drops the connection and opens a new one at once, resuming where the stream was (after
     * the network changed, say). Nothing is missed: the resume replays what came meanwhile.
     */
    reconnect() {
      if (this.current === "closed" || !this.socket) return;
      this.open = false;
      this.socket.close(4e3, "reconnecting");
    }
    /**
     * The user's whole stream (runs of every tab and node): every event once, as it arrives
     * (events recovered after a failed resume come before the live ones of their run). The
     * iteration ends when the client closes.
     */
    events() {
      const queue = new AsyncQueue();
      this.streams.add(queue);
      const remove = () => this.streams.delete(queue);
      const done = queue.return.bind(queue);
      queue.return = () => {
        remove();
        return done();
      };
      return queue;
    }
    /** The user's tool calls waiting for a decision, across threads. */
    async pendingApprovals() {
      const body = await this.http.request("GET", "/v1/approvals");
      return body.approvals;
    }
    /** Decides a waiting tool call. */
    resolveApproval(runId, toolCallId, decision) {
      return this.http.request(
        "POST",
        `/v1/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(toolCallId)}`,
        decision
      );
    }
    /** The user's threads, newest first, a page at a time. */
    listThreads(options = {}) {
      const query = new URLSearchParams();
      if (options.limit !== void 0) query.set("limit", String(options.limit));
      if (options.cursor !== void 0) query.set("cursor", options.cursor);
      const suffix = query.size > 0 ? `?${query}` : "";
      return this.http.request("GET", `/v1/threads${suffix}`);
    }
    /** A thread with its runs (without their events). */
    getThread(threadId) {
      return this.http.request("GET", `/v1/threads/${encodeURIComponent(threadId)}`);
    }
    /**
     * A thread with its runs' events, in one request: its `limit` newest runs (20 by default,
     * 100 at most), oldest first; `before` (the answer's `before`) pages to older runs.
     */
    openThread(threadId, options = {}) {
      const query = new URLSearchParams({ events: "true" });
      if (options.limit !== void 0) query.set("limit", String(options.limit));
      if (options.before !== void 0) query.set("before", options.before);
      return this.http.request("GET", `/v1/threads/${encodeURIComponent(threadId)}?${query}`);
    }
    /** Renames a thread. */
    renameThread(threadId, title) {
      return this.http.request("PATCH", `/v1/threads/${encodeURIComponent(threadId)}`, { title });
    }
    /** Erases a thread with its runs and events. */
    async deleteThread(threadId) {
      await this.http.request("DELETE", `/v1/threads/${encodeURIComponent(threadId)}`);
    }
    /** A run with its events (and its sub-runs'), from the history. */
    getRun(runId) {
      return this.http.request("GET", `/v1/runs/${encodeURIComponent(runId)}`);
    }
    /** What the user's runs spent this budget period. */
    usage() {
      return this.http.request("GET", "/v1/me/usage");
    }
    // ---- the connection ----
    setState(state2) {
      if (this.current === state2 || this.current === "closed") return;
      this.current = state2;
      for (const listener of this.stateListeners) listener(state2);
    }
    notice(notice2) {
      for (const listener of this.noticeListeners) listener(notice2);
    }
    whenOpen() {
      if (this.current === "closed") {
        return Promise.reject(new AgentClientError("closed", "the client is closed"));
      }
      if (this.open) return Promise.resolve();
      return new Promise((resolve, reject) => this.openWaiters.push({ resolve, reject }));
    }
    /** The token to use now: the fixed one, or a fresh one when it was refused or expires. */
    async currentToken() {
      const { getToken } = this.options;
      if (!getToken) return this.token;
      const exp = this.token === void 0 ? void 0 : expiresAt(this.token);
      const stale = this.token === void 0 || this.tokenRefused || exp !== void 0 && exp - Date.now() < RENEW_BEFORE_MS;
      if (stale) {
        this.token = await getToken();
        this.tokenRefused = false;
      }
      return this.token;
    }
    async keepConnected() {
      let first = true;
      while (!this.stopped.signal.aborted) {
        if (!this.rejoining) this.setState(first ? "connecting" : "reconnecting");
        first = false;
        let outcome;
        try {
          outcome = await this.connectOnce();
        } catch (error) {
          outcome = { code: 1006, reason: String(error), opened: false };
        }
        if (this.stopped.signal.aborted) return;
        this.open = false;
        this.socket = void 0;
        const lost = new AgentClientError(
          "connection_lost",
          `the connection closed (${outcome.code}${outcome.reason ? `: ${outcome.reason}` : ""}) before the server answered; the request may or may not have been carried out`
        );
        for (const waiter of this.replies.values()) waiter.reject(lost);
        this.replies.clear();
        if (!outcome.opened && await this.refused(outcome.status)) {
          if (!this.options.getToken) {
            const error = new AgentClientError(
              "unauthorized",
              "the server refused the token (HTTP 401); give the client a valid token or a getToken function",
              { status: 401 }
            );
            for (const waiter of this.openWaiters) waiter.reject(error);
            this.openWaiters = [];
            this.close();
            return;
          }
          this.tokenRefused = true;
        }
        if (this.rejoining) {
          continue;
        }
        this.setState("reconnecting");
        const wait = this.backoff.next();
        this.notice({ type: "disconnected", code: outcome.code, reason: outcome.reason, retryInMs: wait });
        await sleep(wait, this.stopped.signal);
      }
    }
    /** Whether a connection that never opened was refused for its token. */
    async refused(status) {
      if (status !== void 0) return status === 401;
      try {
        await this.http.request("GET", "/v1/me");
        return false;
      } catch (error) {
        return error instanceof AgentClientError && error.status === 401;
      }
    }
    /** One connection, from opening to its close. */
    async connectOnce() {
      const token = await this.currentToken();
      const url = new URL(this.socketUrl);
      if (this.epoch !== void 0 && this.lastSeq !== void 0) {
        url.searchParams.set("epoch", this.epoch);
        url.searchParams.set("after_seq", String(this.lastSeq));
      }
      const heartbeat = this.options.heartbeatMs ?? 15e3;
      return new Promise((resolve) => {
        let opened = false;
        let finished = false;
        let heard = Date.now();
        let pinged = false;
        let timer;
        let socket;
        const onAbort = () => socket?.close(1e3, "client closed");
        const finish2 = (code, reason, status) => {
          if (finished) return;
          finished = true;
          clearInterval(timer);
          this.stopped.signal.removeEventListener("abort", onAbort);
          resolve({ code, reason, opened, ...status === void 0 ? {} : { status } });
        };
        this.stopped.signal.addEventListener("abort", onAbort, { once: true });
        const check = () => {
          const quiet = Date.now() - heard;
          if (quiet < heartbeat) return;
          if (!pinged) {
            pinged = true;
            socket?.send(JSON.stringify({ type: "ping" }));
          } else if (quiet >= 2 * heartbeat) {
            socket?.terminate();
            finish2(1006, `nothing from the server for ${quiet} ms`);
          }
        };
        openSocket(
          url,
          token,
          {
            open: () => {
              opened = true;
              heard = Date.now();
              if (heartbeat > 0) timer = setInterval(check, Math.max(10, heartbeat / 4));
            },
            message: (text) => {
              if (finished) return;
              heard = Date.now();
              pinged = false;
              this.receive(text);
            },
            close: (code, reason, status) => finish2(code, reason, status)
          },
          this.options.WebSocket
        ).then(
          (opening) => {
            socket = opening;
            this.socket = opening;
            if (this.stopped.signal.aborted || finished) opening.close(1e3, "client closed");
          },
          (error) => finish2(1006, String(error))
        );
      });
    }
    receive(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        return;
      }
      if (typeof frame !== "object" || frame === null || typeof frame.type !== "string") return;
      if (typeof frame.seq === "number") {
        this.onEvent(frame);
        return;
      }
      const control = frame;
      switch (control.type) {
        case "connection_established":
          this.onEstablished(control);
          return;
        case "run_accepted": {
          const waiter = this.replies.get(control.request_id ?? "");
          if (!waiter) return;
          this.replies.delete(control.request_id);
          waiter.resolve(control);
          return;
        }
        case "error": {
          const { type: _type, request_id: id, code, message, ...details } = control;
          const key = typeof id === "string" ? id : this.replies.keys().next().value;
          const waiter = key === void 0 ? void 0 : this.replies.get(key);
          if (waiter && key !== void 0) {
            this.replies.delete(key);
            waiter.reject(new AgentClientError(code, message, { details }));
            return;
          }
          this.notice({
            type: "error",
            code,
            message,
            ...typeof id === "string" ? { requestId: id } : {},
            details
          });
          return;
        }
        default:
          return;
      }
    }
    onEstablished(frame) {
      this.userIdValue = frame.user_id;
      const resume = frame.resume;
      const resumed = resume?.status === "ok";
      const lostEpoch = this.epoch !== void 0 && this.epoch !== frame.epoch;
      const rejoined = this.rejoining;
      this.rejoining = false;
      if (!resumed) {
        this.lastSeq = frame.last_seq;
      }
      this.epoch = frame.epoch;
      const failed = resume?.status === "failed" || lostEpoch && !resumed;
      if (failed) {
        const reason = resume?.status === "failed" ? resume.reason : "epoch_changed";
        void this.recover(reason, frame.epoch);
      }
      if (this.options.replay && !resumed && frame.last_seq > 0 && this.replayedEpoch !== frame.epoch) {
        this.replayedEpoch = frame.epoch;
        this.rejoining = true;
        this.lastSeq = 0;
        this.socket?.close(4e3, "replaying the stream's log");
        return;
      }
      this.replayedEpoch ?? (this.replayedEpoch = frame.epoch);
      this.open = true;
      this.backoff.reset();
      this.setState("open");
      for (const waiter of this.openWaiters) waiter.resolve();
      this.openWaiters = [];
      if (resume?.status === "ok") {
        this.notice({ type: rejoined ? "replayed" : "resumed", replayed: resume.replayed });
      }
    }
    onEvent(event) {
      if (this.rejoining) return;
      if (this.lastSeq !== void 0 && event.seq <= this.lastSeq) return;
      if (this.lastSeq !== void 0 && event.seq > this.lastSeq + 1) {
        this.open = false;
        this.socket?.close(4e3, `gap after seq ${this.lastSeq}: resuming`);
        return;
      }
      this.lastSeq = event.seq;
      if (THREAD_TYPES.includes(event.type)) {
        this.notice({ type: "thread_changed", change: event });
        return;
      }
      if (typeof event.run_id !== "string") {
        this.publish(event);
        return;
      }
      const tracker = this.route(event);
      if (tracker.offer(event)) this.publish(event);
      if (tracker.ended && !tracker.recovering) this.retire(tracker);
    }
    /** The tracker of an event's top-level run (made on first sight). */
    route(event) {
      let top = event.run_id;
      if (event.parent_run_id) {
        top = this.topOf.get(event.parent_run_id) ?? event.parent_run_id;
        this.topOf.set(event.run_id, top);
      }
      return this.trackerFor(top, event.run_id === top ? event.thread_id : void 0);
    }
    trackerFor(runId, threadId) {
      let tracker = this.trackers.get(runId);
      if (!tracker) {
        tracker = new RunTracker(runId, threadId);
        this.trackers.set(runId, tracker);
      } else if (threadId !== void 0) {
        tracker.threadId ?? (tracker.threadId = threadId);
      }
      return tracker;
    }
    retire(tracker) {
      setTimeout(() => {
        if (this.trackers.get(tracker.runId) === tracker) this.trackers.delete(tracker.runId);
        for (const [sub, top] of this.topOf) if (top === tracker.runId) this.topOf.delete(sub);
      }, 6e4).unref?.();
    }
    publish(event) {
      for (const stream of this.streams) stream.push(event);
    }
    // ---- failed resumes: snapshot from the history, then the live tail ----
    async recover(reason, epoch) {
      const runs = [...this.trackers.values()].filter((t) => !t.ended && !t.recovering);
      this.notice({ type: "resume_failed", reason, epoch, runs: runs.map((t) => t.runId) });
      await Promise.all(runs.map((tracker) => this.recoverRun(tracker)));
    }
    /**
     * Delivers what the history has of `tracker`'s run beyond what was delivered, holding the
     * live events back until the history reaches them (so nothing is missed between the two)
     * or the run ended there; then the held events, without those the history gave.
     */
    async recoverRun(tracker) {
      tracker.recovering = true;
      const deadline = Date.now() + RECOVERY_DEADLINE_MS;
      let fetches = 0;
      let known = /* @__PURE__ */ new Set();
      try {
        for (; ; ) {
          let record;
          try {
            record = await this.getRun(tracker.runId);
          } catch (error) {
            if (this.stopped.signal.aborted) return;
            const status = error instanceof AgentClientError ? error.status : void 0;
            if (status === 404 || Date.now() > deadline) {
              this.notice({
                type: "run_unrecoverable",
                runId: tracker.runId,
                message: `the events missed while disconnected could not be fetched: ${String(error)}`
              });
              return;
            }
            await sleep(200, this.stopped.signal);
            continue;
          }
          fetches += 1;
          for (const event of tracker.recover(record.events)) this.publish(event);
          known = new Set(record.events.map(eventKey));
          const live2 = record.status === "running" || record.status.startsWith("waiting_for");
          if (!live2) {
            this.endFromRecord(tracker, record);
            return;
          }
          const first = tracker.held[0];
          const reached = first !== void 0 && known.has(eventKey(first));
          if (reached || Date.now() > deadline || first === void 0 && fetches >= 2) return;
          await sleep(first === void 0 ? 300 : 100, this.stopped.signal);
        }
      } finally {
        for (const event of tracker.release(known)) this.publish(event);
        if (tracker.ended) this.retire(tracker);
      }
    }
    /** A run the history says ended but whose terminal event never came (its server died). */
    endFromRecord(tracker, record) {
      if (tracker.ended) return;
      const last = record.events[record.events.length - 1];
      const ended = {
        type: "agent_error",
        data: {
          code: record.error_code ?? record.status,
          message: `the run ended while the connection was down (${record.status}); its server stopped before it finished`
        },
        run_id: record.run_id,
        thread_id: record.thread_id,
        agent_name: last?.agent_name ?? record.agent,
        timestamp: new Date(record.finished_ms ?? Date.now()).toISOString(),
        recovered: true
      };
      if (tracker.deliver(ended)) this.publish(ended);
    }
    // ---- requests ----
    async request(frame) {
      const requestId = `r${this.nextRequest++}`;
      frame.request_id = requestId;
      await this.whenOpen();
      return new Promise((resolve, reject) => {
        this.replies.set(requestId, { resolve, reject });
        this.send(frame).catch((error) => {
          this.replies.delete(requestId);
          reject(error);
        });
      });
    }
  };

  // page/copy.ts
  var copies = { text: null, how: null };
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        Object.assign(copies, { text, how: "clipboard" });
        return true;
      } catch {
      }
    }
    const focused = document.activeElement;
    const area = document.createElement("textarea");
    area.value = text;
    area.readOnly = true;
    area.className = "copy-buffer";
    area.setAttribute("aria-hidden", "true");
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    focused?.focus();
    if (ok) Object.assign(copies, { text, how: "execCommand" });
    return ok;
  }
  function copyButton(what, text) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "secondary copy";
    let timer;
    const say = (shown, label) => {
      b.textContent = shown;
      b.setAttribute("aria-label", label);
    };
    say("Copy", `Copy ${what}`);
    b.addEventListener("click", async () => {
      const ok = await copyText(text());
      if (ok) say("Copied", `Copied ${what}`);
      else say("Not copied", `Not copied: the browser refused to copy ${what}`);
      b.dataset.copied = String(ok);
      clearTimeout(timer);
      timer = setTimeout(() => {
        say("Copy", `Copy ${what}`);
        delete b.dataset.copied;
      }, 2e3);
    });
    return b;
  }
  function copyCodeButtons(root) {
    for (const pre of root.querySelectorAll(".answer pre")) {
      if (pre.parentElement?.classList.contains("code-block")) continue;
      const box = document.createElement("div");
      box.className = "code-block";
      const bar = document.createElement("div");
      bar.className = "code-bar";
      const language = /language-([\w+#.-]+)/.exec(pre.querySelector("code")?.className ?? "")?.[1];
      const label = document.createElement("span");
      label.textContent = language ?? "code";
      bar.append(label, copyButton("the code", () => pre.textContent ?? ""));
      pre.tabIndex = 0;
      pre.setAttribute("role", "group");
      pre.setAttribute("aria-label", language ? `Code (${language})` : "Code");
      pre.replaceWith(box);
      box.append(bar, pre);
    }
  }

  // page/menu.ts
  var open = null;
  var ids = 0;
  var menuIsOpen = () => open !== null;
  function closeMenu(refocus) {
    const was = open;
    if (!was) return;
    open = null;
    was.menu.remove();
    was.button.setAttribute("aria-expanded", "false");
    if (refocus && was.button.isConnected) was.button.focus();
    was.onClose?.();
  }
  function menuButton(name, items, onClose) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "actions";
    button.setAttribute("aria-label", `Actions for ${name}`);
    button.setAttribute("aria-haspopup", "menu");
    button.setAttribute("aria-expanded", "false");
    button.title = "Rename or delete";
    const show = (focus) => {
      closeMenu(false);
      const menu = document.createElement("div");
      menu.className = "row-menu";
      menu.id = `row-menu-${++ids}`;
      menu.setAttribute("role", "menu");
      menu.setAttribute("aria-label", `Actions for ${name}`);
      for (const it of items()) {
        const item = document.createElement("button");
        item.type = "button";
        item.className = it.cls;
        item.textContent = it.label;
        item.tabIndex = -1;
        item.setAttribute("role", "menuitem");
        if (it.title) item.title = it.title;
        item.addEventListener("click", () => {
          if (!it.keepOpen) closeMenu(false);
          it.act(item);
        });
        menu.append(item);
      }
      menu.addEventListener("keydown", (e) => onMenuKey(e, menu));
      menu.addEventListener("focusout", (e) => {
        const to = e.relatedTarget;
        if (to && !menu.contains(to) && to !== button) closeMenu(false);
      });
      button.after(menu);
      button.setAttribute("aria-controls", menu.id);
      button.setAttribute("aria-expanded", "true");
      open = onClose ? { button, menu, onClose } : { button, menu };
      const all = itemsOf(menu);
      all[focus === "first" ? 0 : all.length - 1]?.focus();
      menu.scrollIntoView({ block: "nearest" });
    };
    button.addEventListener("click", () => {
      if (open?.button === button) closeMenu(true);
      else show("first");
    });
    button.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        show(e.key === "ArrowDown" ? "first" : "last");
      }
    });
    return button;
  }
  var itemsOf = (menu) => [...menu.querySelectorAll('[role="menuitem"]')];
  function onMenuKey(e, menu) {
    const all = itemsOf(menu);
    const at = all.indexOf(document.activeElement);
    let next = null;
    switch (e.key) {
      case "ArrowDown":
        next = (at + 1) % all.length;
        break;
      case "ArrowUp":
        next = (at - 1 + all.length) % all.length;
        break;
      case "Home":
        next = 0;
        break;
      case "End":
        next = all.length - 1;
        break;
      case "Escape":
        e.preventDefault();
        e.stopPropagation();
        closeMenu(true);
        return;
      case "Tab":
        closeMenu(true);
        return;
      default:
        return;
    }
    e.preventDefault();
    all[next]?.focus();
  }
  document.addEventListener(
    "pointerdown",
    (e) => {
      const target = e.target;
      if (open && target && !open.menu.contains(target) && !open.button.contains(target)) closeMenu(false);
    },
    true
  );

  // page/app.ts
  var $ = (id) => document.getElementById(id);
  var input = (id) => $(id);
  var SESSION_KEY = "agent-server.session";
  var stats = {
    events: 0,
    duplicates: 0,
    gaps: 0,
    resumed: 0,
    failedResumes: 0,
    connects: 0,
    history: 0,
    stored: 0,
    authFailures: 0,
    // What the Content Security Policy blocked on this page (the browser tests expect none).
    cspViolations: 0
  };
  var state = {
    token: null,
    devUser: null,
    user: null,
    client: null,
    /** The last `seq` the page saw, checked again here: the client must never repeat or skip. */
    lastSeq: null,
    runs: /* @__PURE__ */ new Map(),
    thread: null,
    parked: null,
    history: null,
    /** The agents the server offers, each with a few example prompts (optional). */
    agents: [],
    defaultRejects: false,
    renaming: false,
    refreshAfterRename: false,
    /** The list was not redrawn while a row's menu was open: it is when the menu closes. */
    refreshAfterMenu: false,
    armed: null
  };
  var chat = {
    stats,
    state,
    copies,
    dropConnection: () => state.client?.reconnect(),
    tap: null,
    deliver: (e) => onEvent(e)
  };
  window.chat = chat;
  document.addEventListener("securitypolicyviolation", (e) => {
    stats.cspViolations += 1;
    console.warn("blocked by the page's CSP:", e.violatedDirective, e.blockedURI);
  });
  var PLAIN = {
    frame_too_large: "Your message is too long for this server. Shorten it, or send it in parts.",
    rate_limited: "You are sending messages faster than this server allows. Wait a few seconds, then send again.",
    too_many_runs: "You already have as many answers running as this server allows. Wait for one to finish, or stop one.",
    too_many_engines: "You have too many conversations running at once. Wait for one to finish.",
    shutting_down: "The server is restarting. Wait a moment, then send again.",
    unknown_agent: "That agent is not available on this server. Pick another one.",
    invalid_agent: "That agent name is not valid. Pick an agent from the list.",
    thread_not_found: "This conversation no longer exists. Start a new conversation.",
    invalid_field: "The server could not accept this message.",
    missing_field: "The server could not accept this message.",
    unavailable: "The server cannot reach a service it needs right now. Wait a moment, then send again.",
    internal_error: "The server failed to start the answer. Try again.",
    thread_busy: "This conversation is still answering, and this server does not queue messages. Send again when the answer ends, or press “Send now (interrupt)” to stop it and send this message.",
    thread_waiting_for_approval: "This conversation waits for your decision on a tool call. Decide it above, or press “Send now (interrupt)” to stop that answer and send this message.",
    budget_exceeded: "Your usage budget on this server is used up. Your message is still here: send it again once the budget resets."
  };
  var BUSY = /* @__PURE__ */ new Set(["thread_busy", "thread_waiting_for_approval"]);
  var plain = (f) => BUSY.has(f.code) ? PLAIN[f.code] : f.code === "budget_exceeded" && usageHook("refused", f) || `${PLAIN[f.code] || "The server refused this message."} (${f.message})`;
  function notice(text, kind) {
    const p = document.createElement("p");
    p.textContent = text;
    if (kind) p.className = kind;
    p.setAttribute("role", kind === "error" ? "alert" : "status");
    $("notices").replaceChildren(p);
    if (kind !== "error") setTimeout(() => p.remove(), 1e4);
  }
  function clearNotices() {
    $("notices").replaceChildren();
  }
  function composerNotice(text, kind) {
    const n = $("composer-notice");
    n.textContent = text || "";
    n.hidden = !text;
    if (kind) n.dataset.kind = kind;
    else delete n.dataset.kind;
  }
  function setStatus(name, text) {
    $("status").dataset.state = name;
    $("status").textContent = text;
  }
  var clock = (ms) => new Date(ms).toLocaleTimeString(void 0, { hour: "2-digit", minute: "2-digit" });
  var dayAndTime = (ms) => new Date(ms).toLocaleString(void 0, { dateStyle: "medium", timeStyle: "short" });
  function timeEl(ms, text) {
    const t = document.createElement("time");
    t.dateTime = new Date(ms).toISOString();
    t.textContent = text;
    t.title = dayAndTime(ms);
    return t;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== void 0) e.textContent = text;
    return e;
  }
  function json(v) {
    const p = el("pre", "json");
    p.textContent = JSON.stringify(v, null, 2);
    return p;
  }
  function hook(module, name, args) {
    const f = module?.[name];
    return f ? f(...args) : void 0;
  }
  var approvalHook = (name, ...args) => hook(window.approvals, name, args);
  var multitaskHook = (name, ...args) => hook(window.multitask, name, args);
  var usageHook = (name, ...args) => hook(window.usage, name, args);
  var vendor = window;
  var escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  vendor.marked?.use({ renderer: { html: (token) => escapeHtml(token.text) } });
  function renderMarkdown(target, text) {
    if (vendor.marked && vendor.DOMPurify) {
      target.innerHTML = vendor.DOMPurify.sanitize(vendor.marked.parse(text, { gfm: true, breaks: true }));
    } else target.textContent = text;
    for (const a of target.querySelectorAll("a")) {
      a.target = "_blank";
      a.rel = "noopener noreferrer";
    }
  }
  async function whoAmI(token) {
    try {
      const res = await fetch("/v1/me", { headers: { authorization: `Bearer ${token}` } });
      const body = await res.json().catch(() => ({}));
      if (res.ok) return { user: body.user_id };
      if (res.status === 401) return { refused: body.message || "the token was refused" };
      return { offline: `HTTP ${res.status}` };
    } catch (err) {
      return { offline: String(err) };
    }
  }
  async function devToken(user) {
    const res = await fetch("/dev/token", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user })
    });
    const body = await res.json().catch(() => ({}));
    if (res.ok) return { token: body.token };
    if (res.status === 404) {
      return { refused: "this server has a configured secret, so it hands out no tokens by name: paste a token" };
    }
    return { refused: body.message || `HTTP ${res.status}` };
  }
  function showSignIn(reason) {
    $("signin-reason").textContent = reason || "";
    $("signin-reason").hidden = !reason;
    $("signin").hidden = false;
    for (const id of ["composer", "signout", "sidebar", "sidebar-toggle"]) $(id).hidden = true;
    $("who").textContent = "";
    setStatus("signed-out", "signed out");
  }
  async function signIn(token, devUser) {
    const who = await whoAmI(token);
    if (!who.user) {
      showSignIn(
        who.refused ? `That token was not accepted: ${who.refused}.` : `The server cannot be reached (${who.offline}); try again.`
      );
      return false;
    }
    Object.assign(state, { token, devUser, user: who.user });
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, devUser }));
    clearNotices();
    $("signin-reason").hidden = true;
    $("who").textContent = who.user;
    if (devUser && devUser !== who.user) notice(`Signed in as ${who.user} (the user id of “${devUser}”).`);
    $("signin").hidden = true;
    for (const id of ["composer", "signout", "sidebar-toggle"]) $(id).hidden = false;
    input("token").value = "";
    await loadAgents();
    const history = await refreshThreads();
    connect(!history);
    if (history) void openThread(null);
    usageHook("refresh");
    $("message").focus();
    return true;
  }
  function signOut(reason) {
    const client = state.client;
    state.client = null;
    client?.close();
    sessionStorage.removeItem(SESSION_KEY);
    Object.assign(state, {
      token: null,
      devUser: null,
      user: null,
      lastSeq: null,
      thread: null,
      parked: null,
      history: null,
      renaming: false
    });
    clearConversation();
    $("threads").replaceChildren();
    approvalHook("reset");
    usageHook("reset");
    clearNotices();
    composerNotice("");
    showSignIn(reason);
  }
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const pasted = input("token").value.trim();
    if (pasted) {
      await signIn(pasted, null);
      return;
    }
    const user = input("user").value.trim();
    if (!user) {
      showSignIn("Enter your name, or paste a token.");
      $("user").focus();
      return;
    }
    const got = await devToken(user).catch((err) => ({ refused: String(err), token: void 0 }));
    if (got.token) await signIn(got.token, user);
    else showSignIn(`Could not sign in: ${got.refused}.`);
  });
  $("signout").addEventListener("click", () => signOut(""));
  async function renewToken(client) {
    const token = state.token;
    const who = await whoAmI(token);
    if (!who.refused) return token;
    stats.authFailures += 1;
    if (state.devUser) {
      const got = await devToken(state.devUser).catch((err) => ({ refused: String(err), token: void 0 }));
      if (got.token && state.client === client) {
        state.token = got.token;
        sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token: got.token, devUser: state.devUser }));
        return got.token;
      }
    }
    if (state.client === client) signOut(`Your session is no longer valid (${who.refused}). Sign in again.`);
    throw new Error(`the token was refused: ${who.refused}`);
  }
  async function loadAgents() {
    const res = await fetch("/agents").catch(() => null);
    state.agents = res && res.ok ? await res.json() : [];
    const select = $("agent");
    const kept = select.value;
    select.replaceChildren();
    for (const a of state.agents) {
      const option = el("option", null, a.name);
      option.value = a.name;
      option.title = a.description;
      select.append(option);
    }
    if (kept && state.agents.some((a) => a.name === kept)) select.value = kept;
    delete $("examples-list").dataset.agent;
    describeAgent();
    multitaskHook("composer");
  }
  function describeAgent() {
    const a = state.agents.find((x) => x.name === input("agent").value);
    $("agent-description").textContent = a ? a.description : "";
    showExamples();
  }
  $("agent").addEventListener("change", describeAgent);
  function showExamples() {
    const agent = state.agents.find((a) => a.name === input("agent").value);
    const examples = agent?.examples ?? [];
    const empty = !$("conversation").querySelector(".run") && $("queue").childElementCount === 0;
    const show = !!agent && !!state.user && state.parked === null && empty && examples.length > 0;
    $("examples").hidden = !show;
    const list = $("examples-list");
    if (!show || !agent || list.dataset.agent === agent.name) return;
    list.dataset.agent = agent.name;
    $("examples-title").textContent = `Try asking ${agent.name}`;
    list.replaceChildren(
      ...examples.map((text) => {
        const item = el("li");
        const button = el("button", "secondary example", text);
        button.type = "button";
        button.addEventListener("click", () => {
          $("examples").hidden = true;
          void sendMessage(null, text).finally(showExamples);
        });
        item.append(button);
        return item;
      })
    );
  }
  var CLOSED_BECAUSE = {
    1001: "the server is restarting",
    4008: "the connection was too slow to keep up",
    4009: "the server lost track of your updates"
  };
  var RESUME_FAILED_BECAUSE = {
    epoch_changed: "The server restarted while you were disconnected",
    too_old: "You were disconnected too long for the missed updates to be kept"
  };
  function connect(replay) {
    let first = true;
    const client = new AgentClient({
      url: location.origin,
      getToken: () => {
        if (first) {
          first = false;
          return state.token;
        }
        return renewToken(client);
      },
      backoff: { initialMs: 500, maxMs: 1e4 },
      replay
    });
    state.client = client;
    state.lastSeq = null;
    setStatus("connecting", "connecting…");
    client.onStateChange((s) => {
      if (state.client !== client) return;
      if (s === "open") onOpen();
      else if (s === "connecting") setStatus("connecting", "connecting…");
    });
    client.onNotice((n) => {
      if (state.client === client) onNotice(n);
    });
    void (async () => {
      for await (const e of client.events()) {
        if (state.client !== client) break;
        try {
          if (!chat.tap || !chat.tap(e)) onEvent(e);
        } catch (err) {
          console.error("the page failed to show an event:", e, err);
        }
      }
    })();
    client.connect().catch((err) => {
      if (state.client !== client) return;
      signOut(`The server refused your session (${err instanceof Error ? err.message : String(err)}). Sign in again.`);
    });
  }
  function onOpen() {
    stats.connects += 1;
    setStatus("connected", "connected");
    for (const p of [...$("notices").querySelectorAll("p.disconnected")]) p.remove();
    if (!$("composer-notice").dataset.kind && $("composer-notice").textContent?.startsWith("Not connected")) composerNotice("");
    approvalHook("refresh");
  }
  function onNotice(n) {
    switch (n.type) {
      case "disconnected": {
        const why = CLOSED_BECAUSE[n.code] ?? "the network connection dropped";
        setStatus("reconnecting", `reconnecting in ${(n.retryInMs / 1e3).toFixed(1)} s`);
        notice(`Connection lost (${why}); reconnecting…`, "warn disconnected");
        return;
      }
      case "resumed":
        stats.resumed += n.replayed;
        notice(
          `Reconnected and resumed: ${n.replayed === 0 ? "nothing was missed" : `${n.replayed} missed update(s) caught up`}.`
        );
        return;
      case "replayed":
        stats.history = n.replayed;
        return;
      case "resume_failed":
        stats.failedResumes += 1;
        state.lastSeq = null;
        if (stats.connects === 0) {
          notice("Older activity is no longer available; showing new activity.");
          return;
        }
        notice(
          `${RESUME_FAILED_BECAUSE[n.reason] ?? "The missed updates could not be caught up"}: ${state.history ? "your conversation was reloaded from what the server saved." : "what happened meanwhile cannot be shown."}`,
          "warn"
        );
        clearConversation();
        if (state.history) void openThread(state.thread);
        return;
      case "run_unrecoverable":
        if (state.history) notice(`Part of an answer could not be fetched again: ${n.message}`, "warn");
        return;
      case "thread_changed":
        threadChanged(n.change);
        return;
      case "error": {
        const f = { type: "error", code: n.code, message: n.message, ...n.details };
        if (n.requestId) f.request_id = n.requestId;
        if (approvalHook("refused", f)) return;
        notice(plain(f), "error");
        return;
      }
    }
  }
  function limited(err) {
    if (err instanceof AgentClientError && err.status === 429) {
      notice(`The server is limiting requests from you: ${err.message || "wait a moment"}.`, "warn");
    }
    throw err;
  }
  function api() {
    return state.client ?? new AgentClient({ url: location.origin, token: state.token });
  }
  var threadsTimer = null;
  var awaited = /* @__PURE__ */ new Map();
  var listedThreads = /* @__PURE__ */ new Set();
  var listed = (id) => listedThreads.has(id);
  function awaitThread(threadId) {
    if (state.history !== true || listed(threadId) || awaited.has(threadId)) return;
    awaited.set(threadId, 0);
    lookForAwaited(0);
  }
  function lookForAwaited(delay) {
    if (threadsTimer !== null) return;
    threadsTimer = setTimeout(async () => {
      await refreshThreads();
      threadsTimer = null;
      for (const [id, misses] of awaited) {
        if (listed(id) || misses >= 5) awaited.delete(id);
        else awaited.set(id, misses + 1);
      }
      if (awaited.size) lookForAwaited(250 * 2 ** Math.min(...awaited.values()));
    }, delay);
  }
  async function refreshThreads() {
    if (state.history === false) return false;
    if (state.renaming) {
      state.refreshAfterRename = true;
      return true;
    }
    if (menuIsOpen()) {
      state.refreshAfterMenu = true;
      return true;
    }
    const list = await api().listThreads({ limit: 50 }).catch(limited).catch(() => null);
    if (!list) {
      if (state.history === null) state.history = false;
      return false;
    }
    state.history = true;
    $("sidebar").hidden = false;
    $("threads-empty").hidden = list.threads.length > 0;
    listedThreads = new Set(list.threads.map((t) => t.thread_id));
    const items = list.threads.map((t) => {
      const li = el("li");
      li.dataset.threadId = t.thread_id;
      if (t.thread_id === state.thread) li.setAttribute("aria-current", "true");
      const open2 = el("button", "open");
      open2.type = "button";
      const updated = Number(t.updated_ms);
      const title = t.title || "(untitled)";
      open2.append(el("span", "title", title), timeEl(updated, dayAndTime(updated)));
      open2.title = title;
      open2.addEventListener("click", () => {
        closeSidebar();
        void openThread(t.thread_id);
      });
      const actions = menuButton(
        title,
        () => [
          { label: "Rename", cls: "rename", title: "Rename this conversation", act: () => renameThread(t, li) },
          {
            label: state.armed === t.thread_id ? "Delete?" : "Delete",
            cls: "delete",
            title: "Delete this conversation for good (a second press confirms)",
            keepOpen: true,
            act: (item) => void deleteThread(t.thread_id, item)
          }
        ],
        () => {
          if (!state.refreshAfterMenu) return;
          state.refreshAfterMenu = false;
          void refreshThreads();
        }
      );
      li.append(open2, actions);
      return li;
    });
    const focused = document.activeElement;
    const row2 = focused?.closest("#threads li");
    const control = focused?.classList.contains("actions") ? "actions" : "open";
    $("threads").replaceChildren(...items);
    if (row2?.dataset.threadId) {
      const again = $("threads").querySelector(`li[data-thread-id="${CSS.escape(row2.dataset.threadId)}"] .${control}`);
      again?.focus();
    }
    approvalHook("mark");
    return true;
  }
  function openThread(id) {
    return quietly(() => loadThread(id));
  }
  async function loadThread(id) {
    state.parked = [];
    try {
      if (!await refreshThreads()) return false;
      const first = $("threads").querySelector("li");
      const wanted = id && $("threads").querySelector(`li[data-thread-id="${CSS.escape(id)}"]`) ? id : first?.dataset.threadId;
      clearConversation();
      state.thread = wanted || null;
      stats.stored = 0;
      markCurrent();
      if (!wanted) return true;
      const page = await api().openThread(wanted, { limit: PAGE_RUNS }).catch(limited).catch(() => null);
      if (!page) return true;
      showStored(page.runs);
      earlierButton(wanted, page.before);
      scrollToEnd(true);
      return true;
    } catch (err) {
      notice(`Could not load your conversations: ${String(err)}`, "warn");
      return false;
    } finally {
      const parked = state.parked || [];
      state.parked = null;
      for (const e of parked) render(e, e.seq ?? "recovered");
      multitaskHook("composer");
      showExamples();
    }
  }
  var PAGE_RUNS = 30;
  function showStored(runs) {
    for (const r of runs) {
      const waiting = r.status === "running" && r.events.length === 0;
      const view = runView(r.run_id, null, r.agent, r.message, r.thread_id, waiting ? { position: null } : null);
      for (const e of r.events) render(e, "stored");
      if (view && r.status === "interrupted" && live(view)) {
        finish(view, "interrupted", "interrupted: the server stopped during this answer");
      }
    }
    stats.stored += runs.length;
  }
  function earlierButton(threadId, before) {
    $("conversation").querySelector(".earlier")?.remove();
    if (!before) return;
    const button = el("button", "secondary earlier", "Show earlier messages");
    button.type = "button";
    button.addEventListener("click", async () => {
      button.disabled = true;
      await quietly(async () => {
        const page = await api().openThread(threadId, { limit: PAGE_RUNS, before }).catch(limited).catch(() => null);
        if (!page || state.thread !== threadId) {
          button.disabled = false;
          return;
        }
        const top = $("conversation").querySelector(":scope > article");
        showStored(page.runs);
        for (const r of page.runs) {
          const view = state.runs.get(r.run_id)?.el;
          if (view?.parentElement === $("conversation") && top) $("conversation").insertBefore(view, top);
        }
        earlierButton(threadId, page.before);
        const next = $("conversation").querySelector(".earlier, :scope > article");
        if (next && !next.matches("button")) next.tabIndex = -1;
        next?.focus();
      });
    });
    $("conversation").prepend(button);
  }
  function renameThread(t, li) {
    const field = el("input", "rename-input");
    field.value = t.title;
    field.maxLength = 120;
    field.setAttribute("aria-label", "New title");
    state.renaming = true;
    li.replaceChildren(field);
    field.focus();
    field.select();
    let done = false;
    const finishRename = async (save, refocus = false) => {
      if (done) return;
      done = true;
      const title = field.value.trim();
      if (save && title && title !== t.title) {
        await api().renameThread(t.thread_id, title).catch((err) => {
          const why = err instanceof AgentClientError && err.status ? err.message : "the server cannot be reached";
          notice(`Could not rename that conversation: ${why}.`, "error");
        });
      }
      state.renaming = false;
      state.refreshAfterRename = false;
      await refreshThreads();
      if (refocus) rowOf(t.thread_id)?.querySelector(".actions")?.focus();
    };
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        void finishRename(true, true);
      } else if (e.key === "Escape") void finishRename(false, true);
    });
    field.addEventListener("blur", () => void finishRename(true));
  }
  var rowOf = (id) => $("threads").querySelector(`li[data-thread-id="${CSS.escape(id)}"]`);
  function markCurrent() {
    for (const li of $("threads").children) {
      if (li.dataset.threadId === state.thread) li.setAttribute("aria-current", "true");
      else li.removeAttribute("aria-current");
    }
  }
  var deletingHere = /* @__PURE__ */ new Set();
  function threadChanged(change) {
    if (state.lastSeq !== null && change.seq !== state.lastSeq + 1) stats.gaps += 1;
    state.lastSeq = change.seq;
    stats.events += 1;
    const id = change.thread_id;
    if (change.type === "thread_deleted" && !deletingHere.has(id) && state.thread === id) {
      state.thread = null;
      clearConversation();
      markCurrent();
      notice("This conversation was deleted in another window; a message now starts a new one.", "warn");
    }
    void refreshThreads();
  }
  async function deleteThread(id, button) {
    if (state.armed !== id) {
      state.armed = id;
      button.dataset.armed = "1";
      button.textContent = "Delete?";
      setTimeout(() => {
        if (state.armed !== id) return;
        state.armed = null;
        const b = rowOf(id)?.querySelector(".delete");
        if (b) {
          delete b.dataset.armed;
          b.textContent = "Delete";
        }
      }, 4e3);
      return;
    }
    state.armed = null;
    closeMenu(false);
    deletingHere.add(id);
    try {
      await api().deleteThread(id);
    } catch {
      notice("Could not delete that conversation; try again.", "error");
      rowOf(id)?.querySelector(".actions")?.focus();
      return;
    } finally {
      setTimeout(() => deletingHere.delete(id), 1e4);
    }
    if (state.thread === id) newConversation();
    await refreshThreads();
    if (!document.activeElement || document.activeElement === document.body) {
      ($("threads").querySelector("li .open") ?? $("new-thread")).focus();
    }
  }
  function newConversation() {
    state.thread = null;
    clearConversation();
    markCurrent();
    closeSidebar();
    $("message").focus();
  }
  $("new-thread").addEventListener("click", newConversation);
  function closeSidebar() {
    $("sidebar").classList.remove("open");
    $("sidebar-toggle").setAttribute("aria-expanded", "false");
  }
  $("sidebar-toggle").addEventListener("click", () => {
    const open2 = $("sidebar").classList.toggle("open");
    $("sidebar-toggle").setAttribute("aria-expanded", String(open2));
    if (open2) $("sidebar-close").focus();
  });
  function dismissSidebar() {
    if (!$("sidebar").classList.contains("open")) return;
    closeSidebar();
    $("sidebar-toggle").focus();
  }
  $("sidebar-close").addEventListener("click", dismissSidebar);
  $("sidebar-backdrop").addEventListener("click", dismissSidebar);
  document.addEventListener("keydown", (e) => {
    const renaming = e.target?.classList?.contains("rename-input");
    if (e.key === "Escape" && !renaming) dismissSidebar();
  });
  var belongs = (threadId) => !state.history || !threadId || threadId === state.thread;
  var live = (run) => run.el.dataset.state === "running" || run.el.dataset.state === "waiting";
  function clearConversation() {
    state.runs.clear();
    $("conversation").replaceChildren();
    $("queue").replaceChildren();
    multitaskHook("composer");
    showExamples();
  }
  var loading = 0;
  async function quietly(load) {
    const log = $("conversation");
    loading += 1;
    log.setAttribute("aria-live", "off");
    try {
      return await load();
    } finally {
      setTimeout(() => {
        loading -= 1;
        if (loading === 0) log.setAttribute("aria-live", "polite");
      }, 300);
    }
  }
  function cancelRun(runId) {
    const client = state.client;
    if (!client || client.state !== "open") {
      notice("Not connected right now: the page is reconnecting. Try again in a moment.", "warn");
      return false;
    }
    void client.cancel(runId);
    return true;
  }
  function runView(runId, parentId, agent, message, threadId, queued) {
    let run = state.runs.get(runId);
    if (run) return run;
    const parent = parentId ? state.runs.get(parentId) : void 0;
    if (parentId ? !parent : !belongs(threadId)) return null;
    const root = el(parentId ? "section" : "article", parentId ? "run sub" : "run");
    root.dataset.runId = runId;
    root.dataset.state = "running";
    const timeline = el("ol", "timeline");
    const subs = el("div", "subs");
    const answer = el("div", parentId ? "answer sub-answer" : "answer");
    const status = el("span", "run-state");
    run = { id: runId, el: root, status, timeline, subs, answer, text: "", title: null, seen: /* @__PURE__ */ new Set(), steps: 0, agent };
    if (parent) run.parent = parent;
    if (threadId) run.threadId = threadId;
    if (parent) {
      run.title = el("div", "sub-head", `sub-run · ${agent}: ${message}`);
      root.append(run.title, timeline, subs, answer);
      parent.subs.append(root);
    } else {
      const view = run;
      const bubble = el("div", "bubble");
      view.userText = el("div", "text", message);
      view.userTime = el("time");
      bubble.append(view.userText, view.userTime);
      const reply = el("div", "reply");
      const head = el("div", "reply-head");
      view.agentTime = el("time");
      head.append(el("span", "agent-name", agent), view.agentTime, status);
      const stop = el("button", "secondary stop", "Stop");
      stop.type = "button";
      stop.addEventListener("click", () => cancelRun(runId));
      head.append(stop);
      view.details = el("details", "steps");
      view.details.open = true;
      const summary = el("summary", null, "Working…");
      view.summary = summary;
      summary.addEventListener("click", () => {
        view.toggled = true;
      });
      view.details.append(summary, timeline, subs);
      view.details.setAttribute("aria-live", "off");
      answer.setAttribute("aria-busy", "true");
      const typing = el("div", "typing");
      typing.setAttribute("role", "img");
      typing.setAttribute("aria-label", "The agent is answering");
      typing.append(el("span"), el("span"), el("span"));
      view.error = el("p", "run-error");
      reply.append(head, view.details, typing, answer, view.error);
      root.append(bubble, reply);
    }
    state.runs.set(runId, run);
    if (!parentId && !(queued && multitaskHook("queue", run, queued.position))) $("conversation").append(root);
    if (!parentId) showExamples();
    scrollToEnd(false);
    return run;
  }
  function row(run, seq, kind, what, cls) {
    const li = el("li", `row ${cls || ""}`);
    li.dataset.seq = String(seq);
    const w = el("span", "what");
    if (typeof what === "string") w.textContent = what;
    else w.append(...what);
    li.append(el("span", "kind", kind), w);
    run.timeline.append(li);
    const top = rootOf(run);
    top.steps += 1;
    if (top.summary && top.el.dataset.state === "running") top.summary.textContent = `Working… ${top.steps} step(s)`;
    return li;
  }
  function rootOf(run) {
    let r = run;
    while (r.parent) r = r.parent;
    return r;
  }
  function finish(run, stateName, text) {
    run.el.dataset.state = stateName;
    run.status.textContent = text;
    approvalHook("settle", run);
    if (run.parent) return;
    multitaskHook("settle", run);
    for (const a of run.el.querySelectorAll(".answer[aria-busy]")) a.removeAttribute("aria-busy");
    run.el.querySelector(".reply-head .stop")?.remove();
    if (run.summary) run.summary.textContent = `Steps (${run.steps})`;
    if (run.details) {
      run.details.hidden = run.steps === 0;
      if (!run.toggled) run.details.open = false;
    }
  }
  function onEvent(e) {
    if (typeof e.seq === "number") {
      if (state.lastSeq !== null && e.seq <= state.lastSeq) {
        stats.duplicates += 1;
        return;
      }
      if (state.lastSeq !== null && e.seq !== state.lastSeq + 1) stats.gaps += 1;
      state.lastSeq = e.seq;
      stats.events += 1;
    }
    if (!e.parent_run_id && TERMINAL.has(e.type) || e.type === "budget_exhausted") usageHook("soon");
    if (state.parked) state.parked.push(e);
    else render(e, e.seq ?? "recovered");
  }
  var pendingPaint = /* @__PURE__ */ new Set();
  function paintAnswer(run) {
    if (pendingPaint.has(run)) return;
    pendingPaint.add(run);
    requestAnimationFrame(() => {
      if (!pendingPaint.delete(run)) return;
      renderMarkdown(run.answer, run.text);
      scrollToEnd(false);
    });
  }
  function scrollToEnd(always) {
    const s = $("scroller");
    if (always || s.scrollHeight - s.scrollTop - s.clientHeight < 120) s.scrollTop = s.scrollHeight;
  }
  function render(e, seq) {
    const d = e.data ?? {};
    approvalHook("track", e, seq);
    if (!e.parent_run_id && e.thread_id) awaitThread(e.thread_id);
    if (!e.parent_run_id && !belongs(e.thread_id)) return;
    const run = runView(e.run_id, e.parent_run_id, e.agent_name, d.message || "", e.thread_id);
    if (!run) return;
    const key = eventKey(e);
    if (run.seen.has(key)) return;
    run.seen.add(key);
    const at = Date.parse(e.timestamp);
    if (run.el.dataset.state === "queued") multitaskHook("start", run);
    if (run.budgetWait && e.type !== "budget_exhausted") usageHook("wentOn", run, e, at);
    switch (e.type) {
      case "agent_started":
        if (run.title) run.title.textContent = `sub-run · ${e.agent_name}: ${d.message}`;
        else if (run.userText && run.userTime) {
          run.userText.textContent = d.message;
          const t = timeEl(at, clock(at));
          run.userTime.replaceWith(t);
          run.userTime = t;
        }
        break;
      case "agent_thinking":
        row(run, seq, "thinking", d.reasoning);
        break;
      case "tool_executing":
        row(run, seq, "tool", [el("span", null, d.tool_name), json(d.arguments)]);
        break;
      case "tool_completed":
        row(
          run,
          seq,
          d.is_error ? "tool failed" : "result",
          [el("span", null, `${d.tool_name} · ${d.duration_ms} ms`), json(d.result)],
          d.is_error ? "error" : ""
        );
        break;
      case "agent_response_chunk":
        run.text += d.delta;
        run.answer.dataset.seq = String(seq);
        paintAnswer(run);
        break;
      case "agent_completed": {
        if (!run.text && !run.earlier) {
          run.text = typeof d.result === "string" ? d.result : "```json\n" + JSON.stringify(d.result, null, 2) + "\n```";
        }
        pendingPaint.delete(run);
        renderMarkdown(run.answer, run.text);
        finish(run, "completed", `answered in ${(d.duration_ms / 1e3).toFixed(1)} s`);
        copyControls(run);
        if (run.agentTime) {
          const t = timeEl(at, clock(at));
          run.agentTime.replaceWith(t);
          run.agentTime = t;
        }
        break;
      }
      case "agent_error":
        row(run, seq, "error", `${d.code}: ${d.message}`, "error");
        if (run.error) run.error.textContent = `The agent failed: ${d.message}`;
        finish(run, "error", "failed");
        break;
      case "agent_cancelled": {
        const text = cancelledText(run, d.reason);
        row(run, seq, "stopped", d.reason);
        finish(run, "cancelled", text);
        break;
      }
      // The run paused at a call a person decides: a card where it paused (approvals.js).
      case "approval_requested":
        approvalHook("show", run, e);
        break;
      case "approval_resolved":
        approvalHook("resolve", run, e);
        break;
      // A message sent while the run ran (multitask "steer"), taken here: shown as the user's
      // message at this point of the answer (multitask.js), or else as a step.
      case "message_received":
        if (!multitaskHook("received", run, d.message, at)) row(run, seq, "you added", d.message);
        break;
      // The run's next model call would pass the user's budget: it waits, holding nothing, and
      // goes on by itself when the budget allows. A notice where it paused, with Cancel (usage.js).
      case "budget_exhausted":
        if (!usageHook("paused", run, e)) {
          row(run, seq, "paused", "Your budget is used up: this run goes on by itself when it resets.");
        }
        break;
    }
    if (e.type === "tool_executing" || e.type === "tool_completed") approvalHook("followUp", run, e);
    if (!e.parent_run_id && LIFECYCLE.has(e.type)) multitaskHook("composer");
  }
  function copyControls(run) {
    if (run.parent) return;
    copyCodeButtons(run.el);
    const whole = () => (run.earlier || "") + run.text;
    if (!whole().trim() || run.el.querySelector(".reply-actions")) return;
    const bar = el("div", "reply-actions");
    bar.append(copyButton("the answer", whole));
    if (run.error) run.error.before(bar);
    else run.answer.after(bar);
  }
  var TERMINAL = /* @__PURE__ */ new Set(["agent_completed", "agent_error", "agent_cancelled"]);
  var LIFECYCLE = /* @__PURE__ */ new Set([
    "agent_started",
    "agent_completed",
    "agent_error",
    "agent_cancelled",
    "approval_requested",
    "approval_resolved",
    "budget_exhausted"
  ]);
  function cancelledText(run, reason) {
    if (run.cancelledWhileQueued && run.steps === 0 && !run.text && !run.earlier) return "cancelled before it started";
    if (reason === "interrupted") return "interrupted by your newer message";
    if (reason === "rolled_back") return "rolled back";
    return "stopped";
  }
  var connected = () => state.client?.state === "open";
  var NOT_CONNECTED = "Not connected right now: the page is reconnecting. Your message is still here; send it again in a moment.";
  function send(frame) {
    const client = state.client;
    if (!client || !connected()) {
      composerNotice(NOT_CONNECTED);
      return false;
    }
    void client.send(frame);
    return true;
  }
  async function sendMessage(multitask, example) {
    const message = example ?? input("message").value;
    if (!message.trim()) {
      composerNotice("Type a message first.");
      $("message").focus();
      return;
    }
    let options;
    const raw = input("input").value.trim();
    if (raw) {
      try {
        options = JSON.parse(raw);
      } catch {
        composerNotice('The agent options (under Advanced) must be a JSON object, like {"tools":3}.');
        return;
      }
    }
    const client = state.client;
    if (!client || !connected()) {
      if (example !== void 0 && !input("message").value) input("message").value = example;
      composerNotice(NOT_CONNECTED);
      return;
    }
    composerNotice("");
    const agent = input("agent").value;
    const threadId = state.thread;
    try {
      const run = await client.run({
        agent,
        message,
        ...options ? { input: options } : {},
        ...threadId ? { threadId } : {},
        ...multitask && threadId ? { multitask } : {}
      });
      void run.events.return?.();
      if (state.client !== client) return;
      state.thread = run.threadId;
      if (example === void 0 && input("message").value === message) input("message").value = "";
      composerNotice("");
      if (run.steered) multitaskHook("steered", run.runId, message);
      else runView(run.runId, null, agent, message, run.threadId, run.queued ? { position: run.position ?? null } : null);
      multitaskHook("composer");
      void refreshThreads();
      if (example !== void 0) $("message").focus();
    } catch (err) {
      if (state.client !== client) return;
      if (example !== void 0 && !input("message").value) input("message").value = example;
      const f = err instanceof AgentClientError ? { type: "error", ...err.details, code: err.code, message: err.message } : { type: "error", code: "internal_error", message: String(err) };
      if (f.code === "connection_lost") composerNotice(`${NOT_CONNECTED} (${f.message})`);
      else composerNotice(plain(f), BUSY.has(f.code) ? "busy" : f.code === "budget_exceeded" ? "budget" : null);
      if (f.code === "thread_busy") {
        state.defaultRejects = true;
        multitaskHook("composer");
      }
      $("message").focus();
    }
  }
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    void sendMessage(null);
  });
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  var pageHttp = new HttpApi(
    new URL(location.origin),
    async () => state.token ?? "",
    (input2, init) => fetch(input2, init)
  );
  Object.assign(window, {
    pageHttp,
    state,
    live,
    sendMessage,
    notice,
    json,
    send,
    connected,
    dayAndTime,
    $,
    el,
    timeEl,
    clock,
    renderMarkdown,
    cancelRun,
    scrollToEnd,
    multitaskHook,
    pendingPaint,
    rootOf
  });
  void (async () => {
    let saved;
    try {
      saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch {
      saved = null;
    }
    if (!saved || !saved.token) return;
    const who = await whoAmI(saved.token);
    if (who.user) {
      await signIn(saved.token, saved.devUser || null);
      return;
    }
    if (who.refused && saved.devUser) {
      const got = await devToken(saved.devUser).catch(() => ({ token: void 0 }));
      if (got.token) {
        await signIn(got.token, saved.devUser);
        return;
      }
    }
    sessionStorage.removeItem(SESSION_KEY);
    showSignIn(who.refused ? `Your session is no longer valid (${who.refused}). Sign in again.` : "");
  })();
})();
