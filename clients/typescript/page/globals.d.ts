// What the chat page's app.js (page/app.ts, loaded first) offers the page's other modules.
// They are globals of the page (app.ts puts them on `window`), not imports: each module is
// its own bundle, and the page works without the optional ones.

/** The page's state (app.js). */
declare const state: {
  token: string | null;
  /** Whether the server keeps a history (false: it does not; null: not known yet). */
  history: boolean | null;
  /** The thread shown. */
  thread: string | null;
  /** The runs shown, by id. */
  runs: Map<string, PageRun>;
  /** The agents the server offers (`GET /agents`). */
  agents: { name: string; steerable?: boolean }[];
  /** The server refuses a message into a busy thread by default (`reject`). */
  defaultRejects?: boolean;
};
/** Whether a run is live (running or waiting). */
declare function live(run: PageRun): boolean;
/** Sends the composer's message with a `multitask` strategy. */
declare function sendMessage(multitask?: string): void;
/** A notice at the top of the page. */
declare function notice(text: string, kind?: string): void;
/** A `<pre>` showing `value` as JSON. */
declare function json(value: unknown): HTMLElement;
/** Sends a frame on the page's connection; false when it is not open. */
declare function send(frame: import("../src/protocol.js").ClientFrame): boolean;
/** Whether the page's connection is open. */
declare function connected(): boolean;
/** The server's HTTP API with the signed-in user's token (one for the page's modules). */
declare const pageHttp: import("../src/http.js").HttpApi;
/** A date and time, in the reader's locale. */
declare function dayAndTime(ms: number): string;
/** `document.getElementById`. */
declare function $(id: string): HTMLElement;
/** A new element with a class and text. */
declare function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls?: string,
  text?: string,
): HTMLElementTagNameMap[K];
/** A `<time>` element for `ms` showing `text`. */
declare function timeEl(ms: number, text: string): HTMLElement;
/** A time of day, in the reader's locale. */
declare function clock(ms: number): string;
/** Renders markdown into `target`. */
declare function renderMarkdown(target: HTMLElement, text: string): void;
/** Asks the server to cancel a run; false when the socket is not open. */
declare function cancelRun(runId: string): boolean;
/** Scrolls the conversation to its end (`always`, or only when it was there). */
declare function scrollToEnd(always: boolean): void;
/** Calls a hook of multitask.js. */
declare function multitaskHook(hook: string, ...args: unknown[]): unknown;
/** Runs whose answer waits to be painted. */
declare const pendingPaint: Set<PageRun>;
/** The top-level run of a run (app.js). */
declare function rootOf(run: PageRun): PageRun;

/** A run as app.js shows it. */
interface PageRun {
  id: string;
  details?: HTMLElement;
  /** The approval cards of the run (approvals.ts). */
  approvals?: HTMLElement;
  cards?: Map<string, ApprovalCard>;
  parent?: PageRun;
  el: HTMLElement;
  status: HTMLElement;
  answer: HTMLElement;
  error?: HTMLElement;
  text?: string;
  earlier?: string;
  waitingFor?: string | null;
  budgetWait?: BudgetWait | null;
  /** The run's thread and agent. */
  threadId?: string;
  agent?: string;
  /** A queued run's place in line (multitask.ts). */
  position?: number | null;
  queueState?: HTMLElement;
  queueBar?: HTMLElement;
  cancelledWhileQueued?: boolean;
  /** Messages added to the running run (multitask.ts). */
  added?: AddedMessage[];
}

/** A message added to a running run (`multitask` `steer`). */
interface AddedMessage {
  text: string;
  state: "sent" | "taken" | "missed";
  mine: boolean;
  el: HTMLElement;
  note: HTMLElement;
}

/** The notice of a run that waits for its user's budget. */
interface BudgetWait {
  el: HTMLElement;
  text: HTMLElement;
  cancel: HTMLButtonElement;
  data?: Record<string, unknown>;
}

/** A tool call waiting for a decision, as its card shows it (approvals.ts). */
interface ApprovalCard {
  run: PageRun;
  runId: string;
  callId: string;
  tool: string;
  args: unknown;
  status: string;
  expires?: number;
  sent?: import("../src/http.js").ApprovalDecision;
  reason?: string;
  ran?: unknown;
  answer?: string;
  el: HTMLElement;
  badge: HTMLElement;
  when: HTMLElement;
  what: HTMLElement;
  argsEl: HTMLElement;
  outcome: HTMLElement;
  actions: HTMLElement;
  form: HTMLElement;
  error: HTMLElement;
}

interface Window {
  usage: unknown;
  approvals: unknown;
  multitask: unknown;
  chat?: { approvals?: unknown };
  /** Vendored scripts, when they loaded. */
  marked?: unknown;
  DOMPurify?: unknown;
}
