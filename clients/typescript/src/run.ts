/**
 * Runs as the client follows them: each run's handle, and the bookkeeping that delivers
 * every event of a run exactly once and in order, across reconnects and failed resumes.
 */
import { AsyncQueue } from "./queue.js";
import type { AgentEvent, RunId, ThreadId } from "./protocol.js";
import { TERMINAL_TYPES } from "./protocol.js";

/**
 * An event as the client delivers it: the stream's frame, with its `seq`. Events recovered
 * from the history after a failed resume have no `seq` (they were never on this stream) and
 * carry `recovered: true`.
 */
export type StreamEvent = AgentEvent & { seq?: number; recovered?: true };

/** The events that end a run. */
export type TerminalEvent = Extract<StreamEvent, { type: (typeof TERMINAL_TYPES)[number] }>;

/** An event of one type, e.g. `EventOf<"tool_executing">`. */
export type EventOf<T extends StreamEvent["type"]> = Extract<StreamEvent, { type: T }>;

/** Whether `event` ends its run. */
export function isTerminal(event: StreamEvent): event is TerminalEvent {
  return (TERMINAL_TYPES as readonly string[]).includes(event.type);
}

/**
 * What names an event across the live stream and the history (which has no `seq`): its run,
 * type, time and data. Two events of one run never share all four.
 */
export function eventKey(event: AgentEvent): string {
  const data = canonical((event as { data?: unknown }).data ?? null);
  return `${event.run_id}\u0000${event.type}\u0000${event.timestamp}\u0000${data}`;
}

/**
 * JSON text with every object's keys sorted: the history may keep an event's data with its
 * keys in another order than the live frame had them.
 */
export function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.keys(value as object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** A run started by this client: its ids, its events and its end. */
export interface RunHandle {
  readonly runId: RunId;
  readonly threadId: ThreadId;
  /** Whether the run waits before it starts (behind its thread's run, or for a run slot). */
  readonly queued: boolean;
  /** A queued run's place in line (1: next), when the server said it. */
  readonly position?: number;
  /**
   * Whether the message joined the thread's running run instead (`multitask: "steer"`):
   * `runId` is that run's, and `events` follows it from now on.
   */
  readonly steered: boolean;
  /**
   * The run's events (its sub-runs' too: they carry `parent_run_id`), each exactly once and
   * in order, across reconnects; the iteration ends after the terminal event. One reader.
   */
  readonly events: AsyncIterableIterator<StreamEvent>;
  /** The run's terminal event (`agent_completed`, `agent_error` or `agent_cancelled`). */
  readonly result: Promise<TerminalEvent>;
  /** Asks the server to cancel the run; it then ends with `agent_cancelled`. */
  cancel(): Promise<void>;
}

/** The most events kept for a run nobody has claimed yet (another tab's run). */
const EARLY_LIMIT = 10_000;

/** One top-level run the client follows, with its sub-runs. */
export class RunTracker {
  /**
   * How many of the run's events (its sub-runs' included) were delivered. The history keeps
   * them in the order they were emitted, which is the order they were delivered in, so the
   * history's events from this index on are the ones not delivered yet.
   */
  delivered = 0;
  /** Events that arrived before a handle claimed the run (run_accepted can come after them). */
  private early: StreamEvent[] = [];
  /** Live events held back while the history fills the gap of a failed resume. */
  held: StreamEvent[] = [];
  /** Whether a failed resume is being recovered from the history. */
  recovering = false;
  /** Whether the terminal event was delivered. */
  ended = false;
  /** The handles' queues and results (a steered message's handle joins the run's). */
  private readonly handles: {
    queue: AsyncQueue<StreamEvent>;
    settle(event: TerminalEvent): void;
    fail(error: Error): void;
  }[] = [];

  constructor(
    readonly runId: RunId,
    public threadId: ThreadId | undefined,
  ) {}

  /**
   * Makes a handle's queue and result. The first handle gets the events that came before it
   * at once; a later one (a message steered into the run) those from now on.
   */
  claim(): { events: AsyncQueue<StreamEvent>; result: Promise<TerminalEvent> } {
    const events = new AsyncQueue<StreamEvent>();
    let settle!: (event: TerminalEvent) => void;
    let fail!: (error: Error) => void;
    const result = new Promise<TerminalEvent>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    // A caller that awaits only `events` must not see an unhandled rejection on close.
    result.catch(() => undefined);
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
  offer(event: StreamEvent): boolean {
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
  recover(history: AgentEvent[]): StreamEvent[] {
    const missed = history.slice(this.delivered).map((e): StreamEvent => ({ ...e, recovered: true }));
    return missed.filter((event) => this.deliver(event));
  }

  /**
   * Ends recovering: the held live events are delivered, but for those the history had
   * (`known`: their keys); returns those delivered.
   */
  release(known: Set<string>): StreamEvent[] {
    this.recovering = false;
    const held = this.held;
    this.held = [];
    return held.filter((event) => !known.has(eventKey(event)) && this.deliver(event));
  }

  /** Delivers `event` at once, held events or not (the end the history reports). */
  deliver(event: StreamEvent): boolean {
    if (this.ended) return false;
    this.delivered += 1;
    if (this.handles.length > 0) for (const handle of this.handles) this.push(handle, event);
    else if (this.early.length < EARLY_LIMIT) this.early.push(event);
    if (event.run_id === this.runId && isTerminal(event)) this.ended = true;
    return true;
  }

  /** Ends a handle whose client closed before the run did. */
  abandon(error: Error): void {
    for (const handle of this.handles) {
      handle.queue.end();
      handle.fail(error);
    }
  }

  private push(handle: RunTracker["handles"][number], event: StreamEvent): void {
    handle.queue.push(event);
    if (event.run_id === this.runId && isTerminal(event)) {
      handle.queue.end();
      handle.settle(event);
    }
  }
}
