// The chat page's messages into a busy thread ("double texting"), bundled by esbuild into
// crates/agent-server/static/multitask.js, loaded after app.js, whose helpers (el, state,
// sendMessage, cancelRun, …) it uses. A thread runs one run at a time, so a message sent while
// its run is live waits its turn: it shows at once below the conversation as queued, with its
// place in line and a Cancel button, and joins the conversation when its run starts. While a
// run is live the composer also offers "Send now (interrupt)", and, when the running agent
// takes messages (GET /agents: steerable), "Add to the running answer", whose message shows
// inside that run as the user's, where the agent took it. app.js calls in through
// window.multitask, so a page without this script still works.

// A module (nothing here is global).
export {};

// ---- Messages waiting their turn ----------------------------------------------------------

const ordinal = (n: number) => (n === 1 ? "next in line" : `number ${n} in line`);
const queued = () =>
  [...state.runs.values()].filter((r) => !r.parent && r.el.dataset.state === "queued");

function paintQueued(run: PageRun): void {
  if (run.queueState) {
    run.queueState.textContent = run.position
      ? `Queued: ${ordinal(run.position)}`
      : "Queued: waits for the answer before it";
  }
  if (run.position) run.el.dataset.position = String(run.position);
  else delete run.el.dataset.position;
}

// Keeps the waiting messages in the order they will start.
function sortQueue(): void {
  const items = queued().sort((a, b) => (a.position || Infinity) - (b.position || Infinity));
  for (const r of items) $("queue").append(r.el);
}

// A run accepted `queued` at `position` (1 starts next; null when not known): its message
// waits below the conversation with a Cancel button. True: placed.
function queue(run: PageRun, position?: number | null): boolean {
  run.position = position || null;
  // An `interrupt` goes ahead of the thread's queued messages: they move back one place.
  if (run.position) {
    for (const r of queued()) {
      if (r.threadId === run.threadId && r.position && r.position >= run.position) {
        r.position += 1;
        paintQueued(r);
      }
    }
  }
  run.el.dataset.state = "queued";
  const bar = el("div", "queue-bar");
  const queueState = el("span", "queue-state");
  run.queueState = queueState;
  const cancel = el("button", "secondary cancel-queued", "Cancel");
  cancel.type = "button";
  cancel.setAttribute("aria-label", "Cancel this queued message");
  cancel.addEventListener("click", () => {
    if (!cancelRun(run.id)) return;
    run.cancelledWhileQueued = true;
    cancel.disabled = true;
    queueState.textContent = "Cancelling…";
  });
  bar.append(queueState, cancel);
  run.queueBar = bar;
  run.el.querySelector(".bubble")?.after(bar);
  paintQueued(run);
  $("queue").append(run.el);
  sortQueue();
  return true;
}

// Its agent_started: the message's turn came (or its cancel, which starts it to end it).
function start(run: PageRun): void {
  run.el.dataset.state = "running";
  run.queueBar?.remove();
  for (const r of queued()) {
    if (r.threadId === run.threadId && r.position && run.position && r.position > run.position) {
      r.position -= 1;
      paintQueued(r);
    }
  }
  $("conversation").append(run.el);
  scrollToEnd(false);
}

// ---- Messages added to the running answer (steer) -----------------------------------------

// Each message added to a run, shown where the run took it.
function addedBubble(run: PageRun, text: string, stateName: AddedMessage["state"]): AddedMessage {
  const entry: AddedMessage = {
    text,
    state: stateName,
    mine: false,
    el: el("div", "bubble added"),
    note: el("div", "added-note"),
  };
  entry.el.setAttribute("role", "group");
  entry.el.setAttribute("aria-label", "Your added message");
  entry.el.append(el("div", "text", text), entry.note);
  (run.added ??= []).push(entry);
  return entry;
}

function paintAdded(entry: AddedMessage, at?: number): void {
  entry.el.dataset.state = entry.state;
  if (entry.state === "sent") entry.note.textContent = "Added: the agent reads it at its next step";
  else if (entry.state === "missed") {
    entry.note.textContent = "This answer ended before reading it: it gets an answer of its own below.";
  } else {
    entry.note.replaceChildren("You added this while it answered");
    if (at) entry.note.append(" · ", timeEl(at, clock(at)));
  }
}

// run_accepted `steered`: `message` joined the running run `runId`. Shown at the end of its
// answer so far, as sent, until the run says where it took it (message_received).
function steered(runId: string, message: string): void {
  const run = state.runs.get(runId);
  if (!run || run.parent) return;
  // The run may have taken it before this answer arrived.
  const early = (run.added ?? []).find((a) => a.text === message && a.state === "taken" && !a.mine);
  if (early) {
    early.mine = true;
    return;
  }
  const entry = addedBubble(run, message, "sent");
  entry.mine = true;
  paintAdded(entry);
  run.error?.before(entry.el);
  scrollToEnd(false);
}

// message_received: the run took `message` at this point: the answer so far stays above it,
// what the agent says next goes below. True: shown (app.js shows it as a step otherwise).
function received(run: PageRun, message: string, at?: number): boolean {
  if (run.parent || !run.error) return false;
  let entry = (run.added ?? []).find((a) => a.text === message && a.state === "sent");
  entry ??= addedBubble(run, message, "taken");
  entry.state = "taken";
  paintAdded(entry, at);
  // The answer so far is painted now; the next chunks start a part of their own.
  if (pendingPaint.delete(run)) renderMarkdown(run.answer, run.text ?? "");
  const next = el("div", "answer");
  run.answer.after(entry.el, next);
  run.earlier = (run.earlier || "") + (run.text ?? "");
  run.text = "";
  run.answer = next;
  scrollToEnd(false);
  return true;
}

// The run ended: messages it never read get a run of their own (the server starts it).
function settle(run: PageRun): void {
  for (const entry of run.added ?? []) {
    if (entry.state !== "sent") continue;
    entry.state = "missed";
    paintAdded(entry);
  }
}

// ---- The composer -------------------------------------------------------------------------

// The open thread's run that is live now, if any (the newest).
function liveRun(): PageRun | null {
  let found: PageRun | null = null;
  if (!state.thread) return null;
  for (const r of state.runs.values()) {
    if (!r.parent && r.threadId === state.thread && live(r)) found = r;
  }
  return found;
}

// While the open thread is busy, the composer says what Send does and offers the other ways.
function composer(): void {
  const run = liveRun();
  const inLine = !!state.thread && queued().some((r) => r.threadId === state.thread);
  const agent = run ? state.agents.find((a) => a.name === run.agent) : undefined;
  const steerable = !!run && run.el.dataset.state === "running" && agent?.steerable === true;
  $("live-actions").hidden = !run && !inLine;
  $("send-steer").hidden = !steerable;
  let hint: string;
  if (run && run.el.dataset.state === "waiting" && run.waitingFor === "budget") {
    hint = "The answer above waits for your budget: it goes on by itself once the budget allows; Send now stops it.";
  } else if (run && run.el.dataset.state === "waiting") {
    hint = "The answer above waits for your decision on a tool call: decide it, or Send now to stop that answer.";
  } else if (run) {
    const send = state.defaultRejects ? "Send works again once it ends" : "Send queues your message after it";
    hint = `An answer is running: ${send}; Send now stops it${steerable ? "; Add hands your message to it" : ""}.`;
  } else {
    hint = "Your earlier message waits its turn: Send puts this one in line too; Send now goes first.";
  }
  $("live-hint").textContent = hint;
}

$("send-interrupt").addEventListener("click", () => {
  sendMessage("interrupt");
  $("message").focus();
});
$("send-steer").addEventListener("click", () => {
  sendMessage("steer");
  $("message").focus();
});

window.multitask = { queue, start, steered, received, settle, composer };
