// Generated from clients/typescript/page/multitask.ts by `npm run bundle` there: do not edit.
"use strict";
(() => {
  // page/multitask.ts
  var ordinal = (n) => n === 1 ? "next in line" : `number ${n} in line`;
  var queued = () => [...state.runs.values()].filter((r) => !r.parent && r.el.dataset.state === "queued");
  function paintQueued(run) {
    if (run.queueState) {
      run.queueState.textContent = run.position ? `Queued: ${ordinal(run.position)}` : "Queued: waits for the answer before it";
    }
    if (run.position) run.el.dataset.position = String(run.position);
    else delete run.el.dataset.position;
  }
  function sortQueue() {
    const items = queued().sort((a, b) => (a.position || Infinity) - (b.position || Infinity));
    for (const r of items) $("queue").append(r.el);
  }
  function queue(run, position) {
    run.position = position || null;
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
  function start(run) {
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
  function addedBubble(run, text, stateName) {
    const entry = {
      text,
      state: stateName,
      mine: false,
      el: el("div", "bubble added"),
      note: el("div", "added-note")
    };
    entry.el.setAttribute("role", "group");
    entry.el.setAttribute("aria-label", "Your added message");
    entry.el.append(el("div", "text", text), entry.note);
    (run.added ?? (run.added = [])).push(entry);
    return entry;
  }
  function paintAdded(entry, at) {
    entry.el.dataset.state = entry.state;
    if (entry.state === "sent") entry.note.textContent = "Added: the agent reads it at its next step";
    else if (entry.state === "missed") {
      entry.note.textContent = "This answer ended before reading it: it gets an answer of its own below.";
    } else {
      entry.note.replaceChildren("You added this while it answered");
      if (at) entry.note.append(" · ", timeEl(at, clock(at)));
    }
  }
  function steered(runId, message) {
    const run = state.runs.get(runId);
    if (!run || run.parent) return;
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
  function received(run, message, at) {
    if (run.parent || !run.error) return false;
    let entry = (run.added ?? []).find((a) => a.text === message && a.state === "sent");
    entry ?? (entry = addedBubble(run, message, "taken"));
    entry.state = "taken";
    paintAdded(entry, at);
    if (pendingPaint.delete(run)) renderMarkdown(run.answer, run.text ?? "");
    const next = el("div", "answer");
    run.answer.after(entry.el, next);
    run.earlier = (run.earlier || "") + (run.text ?? "");
    run.text = "";
    run.answer = next;
    scrollToEnd(false);
    return true;
  }
  function settle(run) {
    for (const entry of run.added ?? []) {
      if (entry.state !== "sent") continue;
      entry.state = "missed";
      paintAdded(entry);
    }
  }
  function liveRun() {
    let found = null;
    if (!state.thread) return null;
    for (const r of state.runs.values()) {
      if (!r.parent && r.threadId === state.thread && live(r)) found = r;
    }
    return found;
  }
  function composer() {
    const run = liveRun();
    const inLine = !!state.thread && queued().some((r) => r.threadId === state.thread);
    const agent = run ? state.agents.find((a) => a.name === run.agent) : void 0;
    const steerable = !!run && run.el.dataset.state === "running" && agent?.steerable === true;
    $("live-actions").hidden = !run && !inLine;
    $("send-steer").hidden = !steerable;
    let hint;
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
})();
