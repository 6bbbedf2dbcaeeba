/**
 * `AgentClient`: one connection to the server's `/ws`, kept open (reconnects with backoff and
 * jitter, resume with the last `seq`), the runs it starts, and the server's HTTP API.
 */
import { Backoff, type BackoffOptions, sleep } from "./backoff.js";
import { AgentClientError } from "./errors.js";
import {
  type ApprovalDecision,
  type ApprovalOutcome,
  HttpApi,
  type PendingApproval,
  type RunWithEvents,
  type ThreadConversation,
  type ThreadPage,
  type ThreadWithRuns,
  type Usage,
} from "./http.js";
import type {
  ClientFrame,
  Epoch,
  JsonValue,
  Multitask,
  ResumeStatus,
  RunId,
  SequencedThreadEvent,
  ServerFrame,
  StartAgent,
  ThreadId,
  UserId,
} from "./protocol.js";
import { THREAD_TYPES } from "./protocol.js";
import { AsyncQueue } from "./queue.js";
import { type RunHandle, RunTracker, type StreamEvent, eventKey } from "./run.js";
import { type Socket, openSocket } from "./socket.js";

/** Where the connection stands. */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** How the client authenticates: a fixed token, or a function that fetches a fresh one. */
export type Credentials =
  | { token: string; getToken?: undefined }
  | { token?: undefined; getToken: () => string | Promise<string> };

/** Options of {@link AgentClient}. */
export type AgentClientOptions = Credentials & {
  /** The server's base URL, e.g. `http://127.0.0.1:8080` (`ws://` and `wss://` work too). */
  url: string;
  /** Reconnect delays (default: 200 ms doubling to 10 s, with full jitter). */
  backoff?: BackoffOptions;
  /** The `fetch` to use (default: the platform's). */
  fetch?: typeof fetch;
  /** The WebSocket constructor to use (default: the platform's, else the `ws` package). */
  WebSocket?: new (url: string) => WebSocket;
  /**
   * After this long (ms) without a frame the client sends `ping`; when nothing answers for as
   * long again, it drops the connection and reconnects: a network that went silent is noticed
   * (default 15,000; 0: never).
   */
  heartbeatMs?: number;
  /**
   * A new view of the user's stream (a new tab, say) that shows what the server's log still
   * holds (up to 1,000 events or 10 minutes): the first connection, and the first after a
   * failed resume, start at the log's start instead of the live edge; a `replayed` notice
   * says how many events came from the log (default false: the live edge).
   */
  replay?: boolean;
};

/** What `client.run` starts. */
export interface RunRequest {
  /** The agent's registered name (`GET /agents` lists them). */
  agent: string;
  /** The user's message. */
  message: string;
  /** The thread to continue; a new thread when absent. */
  threadId?: ThreadId;
  /** Agent-specific options, handed to the agent as they are. */
  input?: { [key: string]: JsonValue };
  /** What to do when the thread has a live run (`reject`, `enqueue`, `interrupt`, ...). */
  multitask?: Multitask;
}

/**
 * Something the client tells its user about the stream: a failed resume (events missed on
 * the stream, recovered from the history for the runs in flight), or a run whose missed
 * events could not be recovered.
 */
export type Notice =
  /** The connection dropped; the client reconnects in `retryInMs`. */
  | { type: "disconnected"; code: number; reason: string; retryInMs: number }
  /** Reconnected and resumed: the `replayed` events missed meanwhile came first. */
  | { type: "resumed"; replayed: number }
  /** A new view's stream started at the server's log (option `replay`) with `replayed` events. */
  | { type: "replayed"; replayed: number }
  /** Reconnected, but the missed events could not be replayed; `runs` are being recovered. */
  | { type: "resume_failed"; reason: string; epoch: Epoch; runs: RunId[] }
  | { type: "run_unrecoverable"; runId: RunId; message: string }
  /**
   * One of the user's threads was renamed or deleted, by any tab or client of the user, on
   * any node: a frame of the stream (with its `seq`) that belongs to no run.
   */
  | { type: "thread_changed"; change: SequencedThreadEvent }
  /**
   * A refusal that answers no pending `run()`: of a frame given to `send()` (with its
   * `requestId`), of a `cancel()`, or of the connection itself (`rate_limited`, ...).
   */
  | {
      type: "error";
      code: AgentClientError["code"];
      message: string;
      requestId?: string;
      details: Record<string, unknown>;
    };

/** A token's `exp`, read without checking it (the server checks). */
function expiresAt(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** A token this close to its `exp` is renewed before it is used. */
const RENEW_BEFORE_MS = 30_000;
/** How long the history gets to catch up with the live stream after a failed resume. */
const RECOVERY_DEADLINE_MS = 5_000;

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

/**
 * A client of the agent server. `connect()` opens the user's stream and keeps it open until
 * `close()`; `run()` starts a run and follows its events.
 */
export class AgentClient {
  private readonly base: URL;
  private readonly socketUrl: URL;
  private readonly options: AgentClientOptions;
  private readonly backoff: Backoff;
  private readonly http: HttpApi;
  private token: string | undefined;
  private tokenRefused = false;
  private current: ConnectionState = "idle";
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private readonly noticeListeners = new Set<(notice: Notice) => void>();
  private socket: Socket | undefined;
  private open = false;
  private epoch: Epoch | undefined;
  private lastSeq: number | undefined;
  private userIdValue: UserId | undefined;
  private readonly stopped = new AbortController();
  private openWaiters: Waiter<void>[] = [];
  private readonly replies = new Map<string, Waiter<ServerFrame>>();
  /** The epoch whose log was replayed (option `replay`): each epoch's once. */
  private replayedEpoch: Epoch | undefined;
  /** The socket is being replaced by one that starts at the log (option `replay`). */
  private rejoining = false;
  private nextRequest = 1;
  private readonly trackers = new Map<RunId, RunTracker>();
  /** Sub-run → its top-level run. */
  private readonly topOf = new Map<RunId, RunId>();
  private readonly streams = new Set<AsyncQueue<StreamEvent>>();
  private loop: Promise<void> | undefined;

  constructor(options: AgentClientOptions) {
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
  get state(): ConnectionState {
    return this.current;
  }

  /** The signed-in user, once connected. */
  get userId(): UserId | undefined {
    return this.userIdValue;
  }

  /** Calls `listener` with each new connection state; returns the unsubscribe function. */
  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Calls `listener` with each notice; returns the unsubscribe function. */
  onNotice(listener: (notice: Notice) => void): () => void {
    this.noticeListeners.add(listener);
    return () => this.noticeListeners.delete(listener);
  }

  /**
   * Opens the stream; resolves once the server has said `connection_established`. Rejects
   * when the server refuses the token (and `getToken` gives no better one) or the client is
   * closed. Later drops are reconnected and resumed by themselves.
   */
  connect(): Promise<void> {
    if (this.current === "closed") {
      return Promise.reject(new AgentClientError("closed", "the client is closed"));
    }
    const opened = this.whenOpen();
    this.loop ??= this.keepConnected();
    return opened;
  }

  /** Closes the connection for good: runs' iterations end, waiting calls reject. */
  close(): void {
    if (this.current === "closed") return;
    this.setState("closed");
    this.open = false;
    this.stopped.abort();
    this.socket?.close(1000, "client closed");
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
  async run(request: RunRequest): Promise<RunHandle> {
    if (!request || typeof request.agent !== "string" || request.agent === "") {
      throw new TypeError("run: `agent` (a registered agent's name) is required");
    }
    if (typeof request.message !== "string") {
      throw new TypeError("run: `message` must be a string");
    }
    const payload: StartAgent = { agent: request.agent, message: request.message };
    if (request.threadId !== undefined) payload.thread_id = request.threadId;
    if (request.input !== undefined) payload.input = request.input;
    if (request.multitask !== undefined) payload.multitask = request.multitask;
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
      ...(typeof reply.position === "number" ? { position: reply.position } : {}),
      events,
      result,
      cancel: () => this.cancel(reply.run_id),
    };
  }

  /**
   * Asks the server to cancel `runId` (one of the user's runs, from any tab): the run then
   * ends with `agent_cancelled`. Resolves once asked; the server answers only a refusal
   * (`run_not_found`: the run already ended, or is not the user's), as an `error` notice.
   */
  async cancel(runId: RunId): Promise<void> {
    await this.send({ type: "cancel_run", request_id: `c${this.nextRequest++}`, payload: { run_id: runId } });
  }

  /**
   * Sends a frame as it is, once the connection is open (it waits while reconnecting). The
   * server answers most frames only to refuse them: a refusal comes as an `error` notice with
   * the frame's `request_id`.
   */
  async send(frame: ClientFrame): Promise<void> {
    for (;;) {
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
  reconnect(): void {
    if (this.current === "closed" || !this.socket) return;
    this.open = false;
    this.socket.close(4000, "reconnecting");
  }

  /**
   * The user's whole stream (runs of every tab and node): every event once, as it arrives
   * (events recovered after a failed resume come before the live ones of their run). The
   * iteration ends when the client closes.
   */
  events(): AsyncIterableIterator<StreamEvent> {
    const queue = new AsyncQueue<StreamEvent>();
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
  async pendingApprovals(): Promise<PendingApproval[]> {
    const body = await this.http.request<{ approvals: PendingApproval[] }>("GET", "/v1/approvals");
    return body.approvals;
  }

  /** Decides a waiting tool call. */
  resolveApproval(
    runId: RunId,
    toolCallId: string,
    decision: ApprovalDecision,
  ): Promise<ApprovalOutcome> {
    return this.http.request(
      "POST",
      `/v1/runs/${encodeURIComponent(runId)}/approvals/${encodeURIComponent(toolCallId)}`,
      decision,
    );
  }

  /** The user's threads, newest first, a page at a time. */
  listThreads(options: { limit?: number; cursor?: string } = {}): Promise<ThreadPage> {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    const suffix = query.size > 0 ? `?${query}` : "";
    return this.http.request("GET", `/v1/threads${suffix}`);
  }

  /** A thread with its runs (without their events). */
  getThread(threadId: ThreadId): Promise<ThreadWithRuns> {
    return this.http.request("GET", `/v1/threads/${encodeURIComponent(threadId)}`);
  }

  /**
   * A thread with its runs' events, in one request: its `limit` newest runs (20 by default,
   * 100 at most), oldest first; `before` (the answer's `before`) pages to older runs.
   */
  openThread(
    threadId: ThreadId,
    options: { limit?: number; before?: string } = {},
  ): Promise<ThreadConversation> {
    const query = new URLSearchParams({ events: "true" });
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.before !== undefined) query.set("before", options.before);
    return this.http.request("GET", `/v1/threads/${encodeURIComponent(threadId)}?${query}`);
  }

  /** Renames a thread. */
  renameThread(threadId: ThreadId, title: string): Promise<{ thread_id: ThreadId; title: string }> {
    return this.http.request("PATCH", `/v1/threads/${encodeURIComponent(threadId)}`, { title });
  }

  /** Erases a thread with its runs and events. */
  async deleteThread(threadId: ThreadId): Promise<void> {
    await this.http.request("DELETE", `/v1/threads/${encodeURIComponent(threadId)}`);
  }

  /** A run with its events (and its sub-runs'), from the history. */
  getRun(runId: RunId): Promise<RunWithEvents> {
    return this.http.request("GET", `/v1/runs/${encodeURIComponent(runId)}`);
  }

  /** What the user's runs spent this budget period. */
  usage(): Promise<Usage> {
    return this.http.request("GET", "/v1/me/usage");
  }

  // ---- the connection ----

  private setState(state: ConnectionState): void {
    if (this.current === state || this.current === "closed") return;
    this.current = state;
    for (const listener of this.stateListeners) listener(state);
  }

  private notice(notice: Notice): void {
    for (const listener of this.noticeListeners) listener(notice);
  }

  private whenOpen(): Promise<void> {
    if (this.current === "closed") {
      return Promise.reject(new AgentClientError("closed", "the client is closed"));
    }
    if (this.open) return Promise.resolve();
    return new Promise((resolve, reject) => this.openWaiters.push({ resolve, reject }));
  }

  /** The token to use now: the fixed one, or a fresh one when it was refused or expires. */
  private async currentToken(): Promise<string> {
    const { getToken } = this.options;
    if (!getToken) return this.token as string;
    const exp = this.token === undefined ? undefined : expiresAt(this.token);
    const stale =
      this.token === undefined ||
      this.tokenRefused ||
      (exp !== undefined && exp - Date.now() < RENEW_BEFORE_MS);
    if (stale) {
      this.token = await getToken();
      this.tokenRefused = false;
    }
    return this.token as string;
  }

  private async keepConnected(): Promise<void> {
    let first = true;
    while (!this.stopped.signal.aborted) {
      if (!this.rejoining) this.setState(first ? "connecting" : "reconnecting");
      first = false;
      let outcome: { code: number; reason: string; status?: number; opened: boolean };
      try {
        outcome = await this.connectOnce();
      } catch (error) {
        outcome = { code: 1006, reason: String(error), opened: false };
      }
      if (this.stopped.signal.aborted) return;
      this.open = false;
      this.socket = undefined;
      const lost = new AgentClientError(
        "connection_lost",
        `the connection closed (${outcome.code}${outcome.reason ? `: ${outcome.reason}` : ""}) before the server answered; the request may or may not have been carried out`,
      );
      for (const waiter of this.replies.values()) waiter.reject(lost);
      this.replies.clear();
      if (!outcome.opened && (await this.refused(outcome.status))) {
        if (!this.options.getToken) {
          const error = new AgentClientError(
            "unauthorized",
            "the server refused the token (HTTP 401); give the client a valid token or a getToken function",
            { status: 401 },
          );
          for (const waiter of this.openWaiters) waiter.reject(error);
          this.openWaiters = [];
          this.close();
          return;
        }
        this.tokenRefused = true;
      }
      if (this.rejoining) {
        // Replaced on purpose by a connection that starts at the log: no wait, nothing to say.
        continue;
      }
      this.setState("reconnecting");
      const wait = this.backoff.next();
      this.notice({ type: "disconnected", code: outcome.code, reason: outcome.reason, retryInMs: wait });
      await sleep(wait, this.stopped.signal);
    }
  }

  /** Whether a connection that never opened was refused for its token. */
  private async refused(status: number | undefined): Promise<boolean> {
    if (status !== undefined) return status === 401;
    // Browsers do not tell a refused upgrade's status: ask `/v1/me` with the same token.
    try {
      await this.http.request("GET", "/v1/me");
      return false;
    } catch (error) {
      return error instanceof AgentClientError && error.status === 401;
    }
  }

  /** One connection, from opening to its close. */
  private async connectOnce(): Promise<{
    code: number;
    reason: string;
    status?: number;
    opened: boolean;
  }> {
    const token = await this.currentToken();
    const url = new URL(this.socketUrl);
    if (this.epoch !== undefined && this.lastSeq !== undefined) {
      url.searchParams.set("epoch", this.epoch);
      url.searchParams.set("after_seq", String(this.lastSeq));
    }
    const heartbeat = this.options.heartbeatMs ?? 15_000;
    return new Promise((resolve) => {
      let opened = false;
      let finished = false;
      let heard = Date.now();
      let pinged = false;
      let timer: ReturnType<typeof setInterval> | undefined;
      let socket: Socket | undefined;
      const onAbort = () => socket?.close(1000, "client closed");
      const finish = (code: number, reason: string, status?: number) => {
        if (finished) return;
        finished = true;
        clearInterval(timer);
        this.stopped.signal.removeEventListener("abort", onAbort);
        resolve({ code, reason, opened, ...(status === undefined ? {} : { status }) });
      };
      this.stopped.signal.addEventListener("abort", onAbort, { once: true });
      // Nothing heard for a heartbeat: ping; nothing for another: the connection is gone.
      const check = () => {
        const quiet = Date.now() - heard;
        if (quiet < heartbeat) return;
        if (!pinged) {
          pinged = true;
          socket?.send(JSON.stringify({ type: "ping" }));
        } else if (quiet >= 2 * heartbeat) {
          socket?.terminate();
          finish(1006, `nothing from the server for ${quiet} ms`);
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
            // A socket given up on says nothing more.
            if (finished) return;
            heard = Date.now();
            pinged = false;
            this.receive(text);
          },
          close: (code, reason, status) => finish(code, reason, status),
        },
        this.options.WebSocket,
      ).then(
        (opening) => {
          socket = opening;
          this.socket = opening;
          if (this.stopped.signal.aborted || finished) opening.close(1000, "client closed");
        },
        (error: unknown) => finish(1006, String(error)),
      );
    });
  }

  private receive(text: string): void {
    let frame: { type?: unknown; seq?: unknown; request_id?: unknown };
    try {
      frame = JSON.parse(text) as typeof frame;
    } catch {
      return;
    }
    if (typeof frame !== "object" || frame === null || typeof frame.type !== "string") return;
    if (typeof frame.seq === "number") {
      this.onEvent(frame as unknown as StreamEvent & { seq: number });
      return;
    }
    const control = frame as unknown as ServerFrame;
    switch (control.type) {
      case "connection_established":
        this.onEstablished(control);
        return;
      case "run_accepted": {
        const waiter = this.replies.get(control.request_id ?? "");
        if (!waiter) return;
        this.replies.delete(control.request_id as string);
        waiter.resolve(control);
        return;
      }
      case "error": {
        const { type: _type, request_id: id, code, message, ...details } = control as {
          type: string;
          request_id?: string | null;
          code: AgentClientError["code"];
          message: string;
        } & Record<string, unknown>;
        // A frame the server could not read (`frame_too_large`) is refused without its
        // request_id; the server answers frames in order, so it is the oldest unanswered.
        const key = typeof id === "string" ? id : this.replies.keys().next().value;
        const waiter = key === undefined ? undefined : this.replies.get(key);
        if (waiter && key !== undefined) {
          this.replies.delete(key);
          waiter.reject(new AgentClientError(code, message, { details }));
          return;
        }
        this.notice({
          type: "error",
          code,
          message,
          ...(typeof id === "string" ? { requestId: id } : {}),
          details,
        });
        return;
      }
      default:
        return;
    }
  }

  private onEstablished(frame: Extract<ServerFrame, { type: "connection_established" }>): void {
    this.userIdValue = frame.user_id;
    const resume: ResumeStatus | null | undefined = frame.resume;
    const resumed = resume?.status === "ok";
    const lostEpoch = this.epoch !== undefined && this.epoch !== frame.epoch;
    const rejoined = this.rejoining;
    this.rejoining = false;
    if (!resumed) {
      // A first connection, or a failed resume: live events go on from `last_seq`.
      this.lastSeq = frame.last_seq;
    }
    this.epoch = frame.epoch;
    const failed = resume?.status === "failed" || (lostEpoch && !resumed);
    if (failed) {
      const reason = resume?.status === "failed" ? resume.reason : "epoch_changed";
      void this.recover(reason, frame.epoch);
    }
    if (this.options.replay && !resumed && frame.last_seq > 0 && this.replayedEpoch !== frame.epoch) {
      // A new view (or a new epoch): connect again from the start of the server's log. The
      // events of this socket meanwhile are left to that replay.
      this.replayedEpoch = frame.epoch;
      this.rejoining = true;
      this.lastSeq = 0;
      this.socket?.close(4000, "replaying the stream's log");
      return;
    }
    this.replayedEpoch ??= frame.epoch;
    this.open = true;
    this.backoff.reset();
    this.setState("open");
    for (const waiter of this.openWaiters) waiter.resolve();
    this.openWaiters = [];
    if (resume?.status === "ok") {
      this.notice({ type: rejoined ? "replayed" : "resumed", replayed: resume.replayed });
    }
  }

  private onEvent(event: StreamEvent & { seq: number }): void {
    if (this.rejoining) return;
    if (this.lastSeq !== undefined && event.seq <= this.lastSeq) return;
    if (this.lastSeq !== undefined && event.seq > this.lastSeq + 1) {
      // A hole in the stream (the protocol never makes one): resume from the last event
      // delivered rather than skip what is missing.
      this.open = false;
      this.socket?.close(4000, `gap after seq ${this.lastSeq}: resuming`);
      return;
    }
    this.lastSeq = event.seq;
    if ((THREAD_TYPES as readonly string[]).includes(event.type)) {
      this.notice({ type: "thread_changed", change: event as unknown as SequencedThreadEvent });
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
  private route(event: StreamEvent): RunTracker {
    let top = event.run_id;
    if (event.parent_run_id) {
      top = this.topOf.get(event.parent_run_id) ?? event.parent_run_id;
      this.topOf.set(event.run_id, top);
    }
    return this.trackerFor(top, event.run_id === top ? event.thread_id : undefined);
  }

  private trackerFor(runId: RunId, threadId: ThreadId | undefined): RunTracker {
    let tracker = this.trackers.get(runId);
    if (!tracker) {
      tracker = new RunTracker(runId, threadId);
      this.trackers.set(runId, tracker);
    } else if (threadId !== undefined) {
      tracker.threadId ??= threadId;
    }
    return tracker;
  }

  private retire(tracker: RunTracker): void {
    // Kept a little while: a handle may claim a run whose events all came before its
    // run_accepted.
    setTimeout(() => {
      if (this.trackers.get(tracker.runId) === tracker) this.trackers.delete(tracker.runId);
      for (const [sub, top] of this.topOf) if (top === tracker.runId) this.topOf.delete(sub);
    }, 60_000).unref?.();
  }

  private publish(event: StreamEvent): void {
    for (const stream of this.streams) stream.push(event);
  }

  // ---- failed resumes: snapshot from the history, then the live tail ----

  private async recover(reason: string, epoch: Epoch): Promise<void> {
    const runs = [...this.trackers.values()].filter((t) => !t.ended && !t.recovering);
    this.notice({ type: "resume_failed", reason, epoch, runs: runs.map((t) => t.runId) });
    await Promise.all(runs.map((tracker) => this.recoverRun(tracker)));
  }

  /**
   * Delivers what the history has of `tracker`'s run beyond what was delivered, holding the
   * live events back until the history reaches them (so nothing is missed between the two)
   * or the run ended there; then the held events, without those the history gave.
   */
  private async recoverRun(tracker: RunTracker): Promise<void> {
    tracker.recovering = true;
    const deadline = Date.now() + RECOVERY_DEADLINE_MS;
    let fetches = 0;
    // The keys of the events the history had at the last fetch: held live events among them
    // were delivered already (before the resume failed, or just now from the history).
    let known = new Set<string>();
    try {
      for (;;) {
        let record: RunWithEvents;
        try {
          record = await this.getRun(tracker.runId);
        } catch (error) {
          if (this.stopped.signal.aborted) return;
          const status = error instanceof AgentClientError ? error.status : undefined;
          if (status === 404 || Date.now() > deadline) {
            this.notice({
              type: "run_unrecoverable",
              runId: tracker.runId,
              message: `the events missed while disconnected could not be fetched: ${String(error)}`,
            });
            return;
          }
          await sleep(200, this.stopped.signal);
          continue;
        }
        fetches += 1;
        for (const event of tracker.recover(record.events)) this.publish(event);
        known = new Set(record.events.map(eventKey));
        const live = record.status === "running" || record.status.startsWith("waiting_for");
        if (!live) {
          this.endFromRecord(tracker, record);
          return;
        }
        const first = tracker.held[0];
        const reached = first !== undefined && known.has(eventKey(first));
        if (reached || Date.now() > deadline || (first === undefined && fetches >= 2)) return;
        await sleep(first === undefined ? 300 : 100, this.stopped.signal);
      }
    } finally {
      for (const event of tracker.release(known)) this.publish(event);
      if (tracker.ended) this.retire(tracker);
    }
  }

  /** A run the history says ended but whose terminal event never came (its server died). */
  private endFromRecord(tracker: RunTracker, record: RunWithEvents): void {
    if (tracker.ended) return;
    const last = record.events[record.events.length - 1];
    const ended: StreamEvent = {
      type: "agent_error",
      data: {
        code: record.error_code ?? record.status,
        message: `the run ended while the connection was down (${record.status}); its server stopped before it finished`,
      },
      run_id: record.run_id,
      thread_id: record.thread_id,
      agent_name: last?.agent_name ?? record.agent,
      timestamp: new Date(record.finished_ms ?? Date.now()).toISOString(),
      recovered: true,
    };
    if (tracker.deliver(ended)) this.publish(ended);
  }

  // ---- requests ----

  private async request(
    frame: Extract<ClientFrame, { type: "start_agent" | "cancel_run" | "resolve_approval" }>,
  ): Promise<ServerFrame> {
    const requestId = `r${this.nextRequest++}`;
    frame.request_id = requestId;
    await this.whenOpen();
    return new Promise<ServerFrame>((resolve, reject) => {
      this.replies.set(requestId, { resolve, reject });
      this.send(frame).catch((error: Error) => {
        this.replies.delete(requestId);
        reject(error);
      });
    });
  }
}
