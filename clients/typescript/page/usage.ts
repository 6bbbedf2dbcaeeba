// The chat page's usage line (bundled by esbuild into crates/agent-server/static/usage.js,
// loaded after app.js, whose helpers it uses): under the composer, a quiet line with what the
// user's runs used this budget period (`client.usage()`'s endpoint, GET /v1/me/usage), with
// the budget and when it resets when the server sets one, shown as a warning from 80% of a
// limit on. It is fetched after sign-in and once after runs end (debounced: a burst of endings
// asks once), and stays hidden on a server that counts no usage (no history store: the
// endpoint answers 404), with nothing said. A new message refused with `budget_exceeded` gets
// a plain notice by the composer saying when the budget resets; the message stays typed. A run
// that waits for the budget (`budget_exhausted`) shows a notice where it paused, in plain words
// with a Cancel button, until its next event says it went on (the notice becomes a quiet line)
// or ended. app.js calls in through window.usage, so a page without this script still works.
import type { Usage } from "../src/http.js";

// How long after a run ends the line is fetched again (more endings meanwhile wait with it).
const SETTLE_MS = 700;
// From this share of a limit on, the line is a warning.
const WARN_AT = 0.8;
const stats = { fetches: 0, shown: 0 };
const usage: {
  off: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  resetTimer: ReturnType<typeof setTimeout> | undefined;
  generation: number;
  last: Usage | null;
} = { off: false, timer: undefined, resetTimer: undefined, generation: 0, last: null };
// The notices of runs waiting for the budget now (said again once the line learns the period).
const waits = new Set<BudgetWait>();

const count = (n: number) => Math.round(n).toLocaleString();
// Dollars: cents, or four places below a cent (a few cheap calls are not "$0.00").
const dollars = (n: number) => (n > 0 && n < 0.01 ? `$${n.toFixed(4)}` : `$${n.toFixed(2)}`);
const THIS: Record<string, string> = { day: "today", week: "this week", month: "this month" };
const thisPeriod = (p: string) => THIS[p] ?? `this ${p}`;
const limited = (limit: number | null | undefined): limit is number =>
  limit !== null && limit !== undefined;

// When the period ends, in the reader's time: a date, and the time too for a daily budget.
function resetsText(iso: string, period: string): string {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return iso;
  if (period === "day") {
    return at.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
  }
  return at.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

// The share of the most used limit (0 without one), and whether one is used up.
function pressure(u: Usage): { share: number; out: boolean } {
  let share = 0;
  let out = false;
  for (const part of [u.tokens, u.cost_usd]) {
    if (!part || !limited(part.limit)) continue;
    share = Math.max(share, part.limit > 0 ? part.used / part.limit : 1);
    if (part.remaining !== null && part.remaining <= 0) out = true;
  }
  return { share, out };
}

// What the line says for a /v1/me/usage answer; "" when there is nothing to say (nothing used,
// no budget). Cost shows when a limit is set or some call was priced.
function text(u: Usage): string {
  const tokens = u.tokens ?? { used: 0, limit: null, remaining: null };
  const cost = u.cost_usd ?? { used: 0, limit: null, remaining: null };
  const tokenLimit = limited(tokens.limit);
  const costLimit = limited(cost.limit);
  const priced = (u.calls || 0) > (u.unpriced_calls || 0);
  if (!tokenLimit && !costLimit && !u.calls) return "";
  const parts: string[] = [];
  if (limited(tokens.limit)) parts.push(`${count(tokens.used)} of ${count(tokens.limit)} tokens`);
  else parts.push(`${count(tokens.used || 0)} tokens`);
  if (limited(cost.limit)) parts.push(`${dollars(cost.used)} of ${dollars(cost.limit)}`);
  else if (priced) parts.push(dollars(cost.used || 0));
  let line =
    tokenLimit || costLimit
      ? `${parts.join(" and ")} ${thisPeriod(u.period)}`
      : `Used ${parts.join(" · ")} ${thisPeriod(u.period)}`;
  if (pressure(u).out) line += ": used up";
  if (tokenLimit || costLimit) line += ` · resets ${resetsText(u.resets_at, u.period)}`;
  return line;
}

function paint(u: Usage): void {
  const line = $("usage");
  const said = text(u);
  const { share, out } = pressure(u);
  line.textContent = said;
  line.hidden = !said;
  if (out) line.dataset.level = "out";
  else if (share >= WARN_AT) line.dataset.level = "warn";
  else delete line.dataset.level;
  const unpriced = u.unpriced_calls
    ? `, ${u.unpriced_calls} of them without a price (counted in tokens only)`
    : "";
  line.title = said ? `${u.calls} model call(s) ${thisPeriod(u.period)}${unpriced}` : "";
  if (said) stats.shown += 1;
}

// Fetches the line now. A server without a store answers 404: the line stays hidden and is not
// asked for again until the next sign-in; any other failure keeps what the line showed.
async function refresh(): Promise<void> {
  clearTimeout(usage.timer);
  usage.timer = undefined;
  if (usage.off || !state.token) return;
  const generation = ++usage.generation;
  stats.fetches += 1;
  let u: Usage;
  try {
    u = await pageHttp.request<Usage>("GET", "/v1/me/usage");
  } catch (error) {
    if (generation !== usage.generation) return;
    // By its status, not `instanceof`: the error class is app.js's bundle's, not this one's.
    if ((error as { status?: number } | null)?.status === 404) {
      usage.off = true;
      $("usage").hidden = true;
    }
    return;
  }
  if (!u || generation !== usage.generation) return;
  usage.last = u;
  paint(u);
  for (const w of waits) {
    if (w.el.isConnected) w.text.textContent = pausedText(w.data ?? {}, u.period);
    else waits.delete(w);
  }
  // A new period begins while the page is open: the line starts over by itself.
  clearTimeout(usage.resetTimer);
  const wait = Date.parse(u.resets_at) - Date.now();
  if (wait > 0 && wait < 86_400_000) usage.resetTimer = setTimeout(refresh, wait + 1000);
}

// A run of the user's ended: fetch once things settle.
function soon(): void {
  if (usage.off || !state.token) return;
  clearTimeout(usage.timer);
  usage.timer = setTimeout(refresh, SETTLE_MS);
}

function reset(): void {
  clearTimeout(usage.timer);
  clearTimeout(usage.resetTimer);
  Object.assign(usage, { off: false, timer: undefined, resetTimer: undefined, last: null });
  waits.clear();
  usage.generation += 1;
  $("usage").hidden = true;
  $("usage").textContent = "";
  delete $("usage").dataset.level;
}

// The notice for a message refused with `budget_exceeded`: the server's words with the reset
// time in the reader's time, and what to do. The line is fetched again too.
function refused(f: { message?: string }): string {
  void refresh();
  const m = /^(.*?);? it resets at (\S+?)\.?$/.exec(f.message || "");
  const at = m ? new Date(m[2] ?? "") : null;
  const what = m ? (m[1] ?? "") : f.message || "your budget on this server is used up";
  const when =
    at && !Number.isNaN(at.getTime())
      ? ` It resets ${at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })}.`
      : "";
  const said = what.charAt(0).toUpperCase() + what.slice(1);
  return `${said}.${when} Your message is still here: send it again once the budget resets, or ask the server's operator for a larger budget.`;
}

// ---- A run waiting for the budget ---------------------------------------------------------

// What a `budget_exhausted` event's data says, in plain words; `period` is the budget's
// ("month"), when the line has learnt it.
function pausedText(d: Record<string, unknown>, period?: string): string {
  const cost = d.budget === "cost_usd";
  const used = Number(d.used) || 0;
  const limit = Number(d.limit) || 0;
  const amounts = cost
    ? `${dollars(used)} of ${dollars(limit)}`
    : `${count(used)} of ${count(limit)} tokens`;
  const at = new Date(String(d.resets_at));
  const when = Number.isNaN(at.getTime())
    ? String(d.resets_at)
    : at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  const budget = cost ? "cost" : "token";
  const which = period ? thisPeriod(period) : "this period";
  return `Paused: your ${budget} budget for ${which} is used up (${amounts}). This run goes on by itself when the budget resets on ${when}, or when your limit is raised.`;
}

// `budget_exhausted`: the run (or its sub-run) waits for the budget. The notice goes where it
// paused, with a Cancel button that stops the whole run; the run shows as waiting.
function paused(run: PageRun, e: { data?: Record<string, unknown> }): boolean {
  const root = rootOf(run);
  let wait = run.budgetWait;
  if (!wait) {
    const made: BudgetWait = {
      el: el("div", "budget-wait"),
      text: el("p", "budget-wait-text"),
      cancel: el("button", "secondary budget-cancel", "Cancel"),
    };
    made.el.setAttribute("role", "status");
    made.cancel.type = "button";
    made.cancel.title = "Stop this run instead of waiting for the budget";
    made.cancel.addEventListener("click", () => {
      if (!cancelRun(root.id)) return;
      made.cancel.disabled = true;
      made.cancel.textContent = "Cancelling…";
    });
    made.el.append(made.text, made.cancel);
    if (run.error) run.error.before(made.el);
    else run.el.append(made.el);
    run.budgetWait = made;
    // Something to act on, or to know: it shows even below a long list of steps.
    made.el.scrollIntoView({ block: "nearest" });
    wait = made;
  }
  wait.el.dataset.status = "waiting";
  wait.data = e.data ?? {};
  wait.text.textContent = pausedText(wait.data, usage.last?.period);
  waits.add(wait);
  root.waitingFor = "budget";
  if (root.el.dataset.state === "running") {
    root.el.dataset.state = "waiting";
    root.status.textContent = "waiting for your budget";
  }
  scrollToEnd(false);
  return true;
}

// The next event of a run that waited: it went on (a new period, a higher limit), or it ended
// (cancelled while it waited). The notice becomes a quiet line without its button.
function wentOn(run: PageRun, e: { type: string }, at: number): void {
  const wait = run.budgetWait;
  if (!wait) return;
  run.budgetWait = null;
  waits.delete(wait);
  const root = rootOf(run);
  wait.cancel.remove();
  if (e.type === "agent_cancelled" || e.type === "agent_error") {
    wait.el.dataset.status = "stopped";
    wait.text.textContent =
      e.type === "agent_cancelled"
        ? "Cancelled while it waited for the budget."
        : "Ended while it waited for the budget.";
  } else {
    wait.el.dataset.status = "resumed";
    wait.text.replaceChildren("Waited for the budget, then went on");
    if (!Number.isNaN(at)) wait.text.append(" at ", timeEl(at, clock(at)));
    wait.text.append(".");
    // The line stays where the run paused: what it answered before stays above it, what it
    // answers now goes below.
    if (!run.text) run.answer.before(wait.el);
    else if (run.error) {
      if (pendingPaint.delete(run)) renderMarkdown(run.answer, run.text);
      const next = el("div", run.answer.className);
      wait.el.after(next);
      run.earlier = (run.earlier || "") + run.text;
      run.text = "";
      run.answer = next;
    }
  }
  if (root.waitingFor === "budget") root.waitingFor = null;
  if (root.el.dataset.state === "waiting") {
    root.el.dataset.state = "running";
    root.status.textContent = "";
  }
  multitaskHook("composer");
}

// The last answer and whether the server counts usage at all, for the browser tests.
window.usage = {
  refresh,
  soon,
  reset,
  refused,
  text,
  pausedText,
  paused,
  wentOn,
  stats,
  get last() {
    return usage.last;
  },
  get off() {
    return usage.off;
  },
};
