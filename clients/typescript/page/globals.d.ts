// What the chat page's app.js (a classic script, loaded first) offers the page's modules.
// They are globals of the page, not imports: app.js is not bundled (yet).

/** The page's state (app.js). */
declare const state: { token: string | null };
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
  parent?: PageRun;
  el: HTMLElement;
  status: HTMLElement;
  answer: HTMLElement;
  error?: HTMLElement;
  text?: string;
  earlier?: string;
  waitingFor?: string | null;
  budgetWait?: BudgetWait | null;
}

/** The notice of a run that waits for its user's budget. */
interface BudgetWait {
  el: HTMLElement;
  text: HTMLElement;
  cancel: HTMLButtonElement;
  data?: Record<string, unknown>;
}

interface Window {
  usage: unknown;
}
