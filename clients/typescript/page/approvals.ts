// The chat page's tool-call approvals (bundled by esbuild into
// crates/agent-server/static/approvals.js, loaded after app.js, whose helpers it uses). A run
// that pauses at a call shows a card where it paused; the person decides there, over the
// socket, and every tab of the user learns the decision from the stream
// (`approval_resolved`), this one included: a decision sent shows as "sending" until then. The
// sidebar marks each thread with a call waiting, from the client's `pendingApprovals` endpoint
// (GET /v1/approvals) and the live events. app.js calls in through window.approvals, so a page
// without this script still works.
import type { PendingApproval } from "../src/http.js";
import type { JsonValue } from "../src/protocol.js";

/** An event as app.js hands it over. */
interface PageEvent {
  type: string;
  run_id: string;
  thread_id?: string;
  data?: Record<string, unknown>;
}
/** A refusal (`error` frame) as app.js hands it over. */
interface Refusal {
  request_id?: string;
  code: string;
  message: string;
}
/** A tool of `GET /tools`. */
interface ToolInfo {
  name: string;
  parameters?: Schema;
}
interface Schema {
  properties?: Record<string, { type?: string | string[]; enum?: unknown[]; description?: string }>;
  required?: string[];
}
type Payload = NonNullable<ApprovalCard["sent"]>;

// The user's calls waiting across threads: tool_call_id -> { run_id, thread_id }.
const waiting = new Map<string, { run_id: string; thread_id?: string }>();
// Decisions sent and not yet answered: request_id -> card (the server replies only to refuse).
const asked = new Map<string, ApprovalCard>();
// Live events seen while GET /v1/approvals is under way, applied on top of its answer.
let during: PageEvent[] | null = null;
let tools: Promise<ToolInfo[]> | null = null;
let nextAsk = 1;

// What a refusal of a decision means for the person deciding.
const REFUSED: Record<string, string> = {
  approval_not_found: "This call is no longer waiting: its run was stopped or is gone.",
  approval_already_decided: "This call was already decided (perhaps in another tab).",
  approval_expired:
    "Too late: this call expired before your decision arrived; the tool did not run.",
};
const FINAL = new Set(["approval_not_found", "approval_already_decided", "approval_expired"]);
const REJECTED_PREFIX = "a person rejected this call: ";
const TRACKED = [
  "approval_requested",
  "approval_resolved",
  "agent_completed",
  "agent_error",
  "agent_cancelled",
];

// ---- The sidebar's marks ----------------------------------------------------------------

function apply(e: PageEvent): void {
  const d = e.data ?? {};
  const call = String(d.tool_call_id);
  if (e.type === "approval_requested") {
    waiting.set(call, { run_id: e.run_id, ...(e.thread_id ? { thread_id: e.thread_id } : {}) });
  } else if (e.type === "approval_resolved") waiting.delete(call);
  else if (e.type === "agent_completed" || e.type === "agent_error" || e.type === "agent_cancelled") {
    for (const [id, w] of waiting) if (w.run_id === e.run_id) waiting.delete(id);
  }
}

// Every live event passes here, for whichever thread: the marks follow the stream.
function track(e: PageEvent, seq?: number): void {
  if (typeof seq !== "number") return;
  if (!TRACKED.includes(e.type)) return;
  if (during) during.push(e);
  apply(e);
  mark();
  if (e.type === "approval_requested" && state.history && e.thread_id && e.thread_id !== state.thread) {
    notice(`${String(e.data?.tool_name)} waits for your approval in another conversation (marked in the list).`);
  }
}

// The waiting calls from the server, on load and on every (re)connect.
async function refresh(): Promise<void> {
  if (!state.token) return;
  const live: PageEvent[] = [];
  during = live;
  const list = await pageHttp
    .request<{ approvals: PendingApproval[] }>("GET", "/v1/approvals")
    .catch(() => null);
  if (during !== live) return;
  during = null;
  if (!list || !Array.isArray(list.approvals)) return;
  waiting.clear();
  for (const a of list.approvals) {
    if (a.status === "pending") waiting.set(a.tool_call_id, { run_id: a.run_id, thread_id: a.thread_id });
  }
  for (const e of live) apply(e);
  mark();
}

function mark(): void {
  const count = new Map<string | undefined, number>();
  for (const w of waiting.values()) count.set(w.thread_id, (count.get(w.thread_id) ?? 0) + 1);
  for (const li of Array.from($("threads").children) as HTMLElement[]) {
    const n = count.get(li.dataset.threadId) ?? 0;
    const open = li.querySelector(".open");
    let badge = li.querySelector<HTMLElement>(".approval-mark");
    if (!n || !open) {
      badge?.remove();
      delete li.dataset.waiting;
      continue;
    }
    li.dataset.waiting = String(n);
    if (!badge) {
      badge = el("span", "approval-mark");
      const time = open.querySelector("time");
      if (time) time.before(badge);
      else open.append(badge);
    }
    badge.textContent = n > 1 ? `${n} need approval` : "needs approval";
    badge.title = "A tool call in this conversation waits for your decision";
  }
  const toggle = $("sidebar-toggle");
  if (waiting.size) toggle.dataset.waiting = String(waiting.size);
  else delete toggle.dataset.waiting;
  toggle.title = waiting.size ? `${waiting.size} tool call(s) wait for your approval` : "";
}

function reset(): void {
  waiting.clear();
  asked.clear();
  during = null;
  mark();
}

// ---- The card -----------------------------------------------------------------------------

function container(run: PageRun): { box: HTMLElement; cards: Map<string, ApprovalCard> } {
  if (!run.approvals || !run.cards) {
    run.approvals = el("div", "approvals");
    if (run.details) run.details.after(run.approvals);
    else run.answer.before(run.approvals);
    run.cards = new Map();
  }
  return { box: run.approvals, cards: run.cards };
}
const pendingIn = (run: PageRun) =>
  [...(run.cards?.values() ?? [])].some((c) => c.status === "pending" || c.status === "sending");

// `approval_requested`: the card, waiting for a decision.
function show(run: PageRun, e: PageEvent): void {
  const d = e.data ?? {};
  const { box, cards } = container(run);
  const callId = String(d.tool_call_id);
  if (cards.has(callId)) return;
  const tool = String(d.tool_name);
  const card: ApprovalCard = {
    run,
    runId: e.run_id,
    callId,
    tool,
    args: d.arguments ?? {},
    status: "pending",
    el: el("div", "approval"),
    badge: el("span", "approval-badge"),
    when: el("span", "approval-when"),
    what: el("p", "approval-what"),
    argsEl: json(d.arguments ?? {}),
    outcome: el("div", "approval-outcome"),
    actions: el("div", "approval-actions"),
    form: el("div", "approval-form"),
    error: el("p", "approval-error"),
  };
  card.el.dataset.callId = callId;
  card.el.setAttribute("role", "group");
  card.el.setAttribute("aria-label", `Approval for ${tool}`);
  const head = el("div", "approval-head");
  head.append(card.badge, card.when);
  const approve = button("Approve", "approve", () => decide(card, { decision: "approve" }));
  const edit = button("Edit", "secondary edit", () => void openEditor(card));
  const reject = button("Reject", "secondary reject", () => openReject(card));
  card.actions.append(approve, edit, reject);
  card.form.hidden = true;
  card.error.setAttribute("role", "alert");
  card.el.append(head, card.what, card.argsEl, card.outcome, card.actions, card.form, card.error);
  cards.set(callId, card);
  box.append(card.el);
  if (d.expires_at) card.expires = Date.parse(String(d.expires_at));
  paint(card);
  if (run.el.dataset.state === "running") {
    run.el.dataset.state = "waiting";
    run.status.textContent = "waiting for your approval";
  }
  scrollToEnd(false);
}

function button(text: string, cls: string, onClick: () => void): HTMLButtonElement {
  const b = el("button", cls, text);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

const DECIDED: Record<string, string> = {
  approve: "Approved",
  edit: "Approved with changes",
  reject: "Rejected",
  respond: "Answered instead",
  expired: "Expired",
  stopped: "No longer waiting",
  closed: "No longer waiting",
};

// Draws the card for its status: pending (buttons), sending, or decided (no buttons).
function paint(card: ApprovalCard): void {
  const s = card.status;
  const open = s === "pending" || s === "sending";
  card.el.dataset.status = s;
  card.badge.textContent = open ? "Needs your approval" : (DECIDED[s] ?? `Decided: ${s}`);
  if (s === "reject" && card.reason) card.badge.textContent = `Rejected: ${card.reason}`;
  const args = card.args;
  const noArgs = !args || (typeof args === "object" && Object.keys(args).length === 0);
  const what = open
    ? noArgs
      ? " wants to run (without arguments)."
      : " wants to run with:"
    : noArgs
      ? " asked to run (without arguments)."
      : " asked to run with:";
  card.what.replaceChildren(el("strong", undefined, card.tool), what);
  card.argsEl.hidden = noArgs;
  card.when.replaceChildren();
  if (s === "pending" && card.expires) {
    card.when.append("expires ", timeEl(card.expires, dayAndTime(card.expires)));
  }
  if (s === "sending") card.when.textContent = "sending your decision…";
  card.actions.hidden = !open || !card.form.hidden;
  for (const b of card.actions.querySelectorAll("button")) b.disabled = s === "sending";
  for (const b of card.form.querySelectorAll("button")) b.disabled = s === "sending";
  if (!open) {
    card.form.hidden = true;
    card.form.replaceChildren();
  }
  card.outcome.replaceChildren(...outcome(card));
}

function outcome(card: ApprovalCard): HTMLElement[] {
  const p = (text: string) => el("p", undefined, text);
  switch (card.status) {
    case "approve":
      return [p(`${card.tool} ran with these arguments.`)];
    case "edit":
      return card.ran
        ? [p(`${card.tool} ran with:`), json(card.ran)]
        : [p(`${card.tool} ran with edited arguments.`)];
    case "reject":
      return [p(`${card.tool} did not run; the agent was told${card.reason ? " why" : ""}.`)];
    case "respond":
      return [
        p(
          card.answer
            ? `${card.tool} did not run; the agent got this answer instead: ${card.answer}`
            : `${card.tool} did not run; the agent got an answer instead.`,
        ),
      ];
    case "expired":
      return [p(`Nobody decided in time; ${card.tool} did not run.`)];
    case "stopped":
      return [p(`The run ended before a decision; ${card.tool} did not run.`)];
    default:
      return [];
  }
}

// ---- Deciding -----------------------------------------------------------------------------

function decide(card: ApprovalCard, payload: Payload): void {
  if (card.status !== "pending") return;
  if (!connected()) {
    card.error.textContent = "Not connected right now: the page is reconnecting. Try again in a moment.";
    return;
  }
  const request_id = `approval-${nextAsk++}`;
  card.sent = payload;
  card.error.textContent = "";
  asked.set(request_id, card);
  send({
    type: "resolve_approval",
    request_id,
    payload: { run_id: card.runId, tool_call_id: card.callId, ...payload },
  });
  card.status = "sending";
  paint(card);
}

function toolList(): Promise<ToolInfo[]> {
  tools ??= fetch("/tools")
    .then((r) => (r.ok ? (r.json() as Promise<ToolInfo[]>) : []))
    .catch(() => []);
  return tools;
}

const typeName = (p: { type?: string | string[]; enum?: unknown[] }) =>
  Array.isArray(p.enum)
    ? `one of ${p.enum.map((v) => JSON.stringify(v)).join(", ")}`
    : Array.isArray(p.type)
      ? p.type.join(" or ")
      : p.type || "any value";

// The tool schema's fields as a hint: name, type, whether required, and what it is.
function fieldsHint(schema?: Schema): HTMLElement {
  const props = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const names = Object.keys(props);
  if (!names.length) return el("p", "approval-hint", "This tool takes no fields: send {}.");
  const list = el("ul", "approval-fields");
  for (const name of names) {
    const p = props[name] ?? {};
    const li = el("li");
    const need = required.has(name) ? ", required" : ", optional";
    li.append(el("code", undefined, name), ` ${typeName(p)}${need}${p.description ? ` — ${p.description}` : ""}`);
    list.append(li);
  }
  return list;
}

function formButtons(primary: string, cls: string, onCancel: () => void): HTMLElement {
  const row = el("div", "approval-actions");
  const go = el("button", cls, primary);
  go.type = "submit";
  row.append(go, button("Cancel", "secondary", onCancel));
  return row;
}

function closeForm(card: ApprovalCard): void {
  card.form.hidden = true;
  card.form.replaceChildren();
  card.actions.hidden = card.status !== "pending" && card.status !== "sending";
  card.error.textContent = "";
}

function showForm(card: ApprovalCard, form: HTMLFormElement, field: HTMLElement): void {
  form.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") closeForm(card);
  });
  card.actions.hidden = true;
  card.error.textContent = "";
  card.form.replaceChildren(form);
  card.form.hidden = false;
  field.focus();
  form.scrollIntoView({ block: "nearest" });
}

async function openEditor(card: ApprovalCard): Promise<void> {
  if (card.status !== "pending") return;
  const form = el("form", "approval-editor");
  form.noValidate = true;
  const area = el("textarea", "approval-json");
  area.value = JSON.stringify(card.args, null, 2);
  area.rows = Math.min(12, Math.max(3, area.value.split("\n").length + 1));
  area.spellcheck = false;
  const label = el("label", undefined, `Arguments for ${card.tool}, as a JSON object`);
  label.append(area);
  const hint = el("div", "approval-hint-box");
  hint.append(el("p", "approval-hint", "Loading the tool's fields…"));
  form.append(label, hint, formButtons("Run with these arguments", "run-edited", () => closeForm(card)));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    let args: unknown;
    try {
      args = JSON.parse(area.value);
    } catch (err) {
      card.error.textContent = `That is not valid JSON: ${(err as Error).message}`;
      area.focus();
      return;
    }
    if (!args || typeof args !== "object" || Array.isArray(args)) {
      card.error.textContent = 'The arguments must be a JSON object, in braces: {"name": value}.';
      area.focus();
      return;
    }
    decide(card, { decision: "edit", arguments: args as { [key: string]: JsonValue } });
  });
  showForm(card, form, area);
  const tool = (await toolList()).find((t) => t.name === card.tool);
  hint.replaceChildren(
    tool
      ? el("p", "approval-hint", `${card.tool}'s fields:`)
      : el(
          "p",
          "approval-hint",
          `The fields of ${card.tool} could not be loaded; the server checks them when you send.`,
        ),
  );
  if (tool) hint.append(fieldsHint(tool.parameters));
}

function openReject(card: ApprovalCard): void {
  if (card.status !== "pending") return;
  const form = el("form", "approval-reject");
  const reason = el("input", "approval-reason");
  reason.maxLength = 500;
  reason.placeholder = "not now";
  const label = el("label", undefined, "Why? (optional; the agent is told)");
  label.append(reason);
  form.append(label, formButtons("Reject", "reject-confirm", () => closeForm(card)));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const message = reason.value.trim();
    decide(card, message ? { decision: "reject", message } : { decision: "reject" });
  });
  showForm(card, form, reason);
}

// `approval_resolved`: the decision, from this tab or any other.
function resolve(run: PageRun, e: PageEvent): void {
  const d = e.data ?? {};
  const card = run.cards?.get(String(d.tool_call_id));
  if (!card) return;
  for (const [id, c] of asked) if (c === card) asked.delete(id);
  card.status = String(d.decision);
  const sent = card.sent;
  if (sent?.decision === "reject" && d.decision === "reject" && sent.message) card.reason = sent.message;
  if (sent?.decision === "edit" && d.decision === "edit") card.ran = sent.arguments;
  if (sent?.decision === "respond" && d.decision === "respond") card.answer = sent.message;
  card.error.textContent = "";
  paint(card);
  if (run.el.dataset.state === "waiting" && !pendingIn(run)) {
    run.el.dataset.state = "running";
    run.status.textContent = "";
  }
}

// The decided call's own events say what a decision made elsewhere was: the arguments it ran
// with, the reason it was rejected, the answer given instead.
function followUp(run: PageRun, e: PageEvent): void {
  const d = e.data ?? {};
  const card = run.cards?.get(String(d.tool_call_id));
  if (!card) return;
  const result = d.result as { error?: unknown } | string | undefined;
  const error = typeof result === "object" && result ? result.error : undefined;
  if (e.type === "tool_executing" && card.status === "edit") card.ran = d.arguments;
  else if (
    e.type === "tool_completed" &&
    card.status === "reject" &&
    typeof error === "string" &&
    error.startsWith(REJECTED_PREFIX)
  ) {
    card.reason = error.slice(REJECTED_PREFIX.length);
  } else if (e.type === "tool_completed" && card.status === "respond" && typeof result === "string") {
    card.answer = result;
  } else return;
  paint(card);
}

// The run ended (cancelled, failed): its undecided calls can no longer be decided.
function settle(run: PageRun): void {
  if (!run.cards) return;
  for (const card of run.cards.values()) {
    if (card.status !== "pending" && card.status !== "sending") continue;
    card.status = "stopped";
    paint(card);
  }
}

// An `error` frame: true when it refuses a decision of this page, shown on its card.
function refused(f: Refusal): boolean {
  const card = f.request_id ? asked.get(f.request_id) : undefined;
  if (!card || !f.request_id) return false;
  asked.delete(f.request_id);
  const plain = REFUSED[f.code];
  card.error.textContent = plain
    ? `${plain} (${f.message})`
    : `The server did not accept this decision: ${f.message}`;
  if (card.status === "sending") {
    card.status = FINAL.has(f.code) ? "closed" : "pending";
    paint(card);
    const field =
      card.status === "pending" && !card.form.hidden
        ? card.form.querySelector<HTMLElement>("textarea, input")
        : null;
    field?.focus();
  }
  card.error.scrollIntoView({ block: "nearest" });
  return true;
}

window.approvals = { track, refresh, mark, reset, show, resolve, followUp, settle, refused };
if (window.chat) window.chat.approvals = { waiting, asked };
