// The chat page's tool-call approvals, served as /static/approvals.js and loaded after app.js,
// whose helpers (el, json, send, state, getJson, notice, …) it uses. A run that pauses at a
// call shows a card where it paused; the person decides there, over the socket, and every
// tab of the user learns the decision from the stream (`approval_resolved`), this one
// included: a decision sent shows as "sending" until then. The sidebar marks each thread
// with a call waiting, from GET /v1/approvals and the live events.
// app.js calls in through window.approvals, so a page without this script still works.
"use strict";
(() => {
  // The user's calls waiting across threads: tool_call_id -> { run_id, thread_id }.
  const waiting = new Map();
  // Decisions sent and not yet answered: request_id -> card (the server replies only to refuse).
  const asked = new Map();
  // Live events seen while GET /v1/approvals is under way, applied on top of its answer.
  let during = null;
  let tools = null;
  let nextAsk = 1;

  // What a refusal of a decision means for the person deciding.
  const REFUSED = {
    approval_not_found: "This call is no longer waiting: its run was stopped or is gone.",
    approval_already_decided: "This call was already decided (perhaps in another tab).",
    approval_expired: "Too late: this call expired before your decision arrived; the tool did not run.",
  };
  const FINAL = new Set(["approval_not_found", "approval_already_decided", "approval_expired"]);
  const REJECTED_PREFIX = "a person rejected this call: ";

  // ---- The sidebar's marks ----------------------------------------------------------------

  function apply(e) {
    const d = e.data || {};
    if (e.type === "approval_requested") waiting.set(d.tool_call_id, { run_id: e.run_id, thread_id: e.thread_id });
    else if (e.type === "approval_resolved") waiting.delete(d.tool_call_id);
    else if (e.type === "agent_completed" || e.type === "agent_error" || e.type === "agent_cancelled") {
      for (const [id, w] of waiting) if (w.run_id === e.run_id) waiting.delete(id);
    }
  }
  // Every live event passes here, for whichever thread: the marks follow the stream.
  function track(e, seq) {
    if (typeof seq !== "number") return;
    if (!["approval_requested", "approval_resolved", "agent_completed", "agent_error", "agent_cancelled"].includes(e.type)) return;
    if (during) during.push(e);
    apply(e);
    mark();
    if (e.type === "approval_requested" && state.history && e.thread_id && e.thread_id !== state.thread) {
      notice(`${e.data.tool_name} waits for your approval in another conversation (marked in the list).`);
    }
  }
  // The waiting calls from the server, on load and on every (re)connect.
  async function refresh() {
    if (!state.token) return;
    const live = (during = []);
    const list = await getJson("/v1/approvals").catch(() => null);
    if (during !== live) return;
    during = null;
    if (!list || !Array.isArray(list.approvals)) return;
    waiting.clear();
    for (const a of list.approvals) if (a.status === "pending") waiting.set(a.tool_call_id, { run_id: a.run_id, thread_id: a.thread_id });
    for (const e of live) apply(e);
    mark();
  }
  function mark() {
    const count = new Map();
    for (const w of waiting.values()) count.set(w.thread_id, (count.get(w.thread_id) || 0) + 1);
    for (const li of $("threads").children) {
      const n = count.get(li.dataset.threadId) || 0;
      const open = li.querySelector(".open");
      let badge = li.querySelector(".approval-mark");
      if (!n || !open) { if (badge) badge.remove(); delete li.dataset.waiting; continue; }
      li.dataset.waiting = String(n);
      if (!badge) {
        badge = el("span", "approval-mark");
        const time = open.querySelector("time");
        if (time) time.before(badge); else open.append(badge);
      }
      badge.textContent = n > 1 ? `${n} need approval` : "needs approval";
      badge.title = "A tool call in this conversation waits for your decision";
    }
    if (waiting.size) $("sidebar-toggle").dataset.waiting = String(waiting.size);
    else delete $("sidebar-toggle").dataset.waiting;
    $("sidebar-toggle").title = waiting.size ? `${waiting.size} tool call(s) wait for your approval` : "";
  }
  function reset() {
    waiting.clear();
    asked.clear();
    during = null;
    mark();
  }

  // ---- The card -----------------------------------------------------------------------------

  function container(run) {
    if (!run.approvals) {
      run.approvals = el("div", "approvals");
      if (run.details) run.details.after(run.approvals); else run.answer.before(run.approvals);
      run.cards = new Map();
    }
    return run.approvals;
  }
  const pendingIn = (run) => [...run.cards.values()].some((c) => c.status === "pending" || c.status === "sending");

  // `approval_requested`: the card, waiting for a decision.
  function show(run, e) {
    const d = e.data || {};
    const box = container(run);
    if (run.cards.has(d.tool_call_id)) return;
    const card = { run, runId: e.run_id, callId: d.tool_call_id, tool: d.tool_name, args: d.arguments || {}, status: "pending" };
    card.el = el("div", "approval");
    card.el.dataset.callId = d.tool_call_id;
    card.el.setAttribute("role", "group");
    card.el.setAttribute("aria-label", `Approval for ${d.tool_name}`);
    card.badge = el("span", "approval-badge");
    card.when = el("span", "approval-when");
    const head = el("div", "approval-head");
    head.append(card.badge, card.when);
    card.what = el("p", "approval-what");
    card.argsEl = json(card.args);
    card.outcome = el("div", "approval-outcome");
    card.actions = el("div", "approval-actions");
    const approve = button("Approve", "approve", () => decide(card, { decision: "approve" }));
    const edit = button("Edit", "secondary edit", () => openEditor(card));
    const reject = button("Reject", "secondary reject", () => openReject(card));
    card.actions.append(approve, edit, reject);
    card.form = el("div", "approval-form");
    card.form.hidden = true;
    card.error = el("p", "approval-error");
    card.error.setAttribute("role", "alert");
    card.el.append(head, card.what, card.argsEl, card.outcome, card.actions, card.form, card.error);
    run.cards.set(card.callId, card);
    box.append(card.el);
    if (d.expires_at) card.expires = Date.parse(d.expires_at);
    paint(card);
    if (run.el.dataset.state === "running") {
      run.el.dataset.state = "waiting";
      run.status.textContent = "waiting for your approval";
    }
    scrollToEnd(false);
  }
  function button(text, cls, onClick) {
    const b = el("button", cls, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }
  const DECIDED = {
    approve: "Approved",
    edit: "Approved with changes",
    reject: "Rejected",
    respond: "Answered instead",
    expired: "Expired",
    stopped: "No longer waiting",
    closed: "No longer waiting",
  };
  // Draws the card for its status: pending (buttons), sending, or decided (no buttons).
  function paint(card) {
    const s = card.status;
    const open = s === "pending" || s === "sending";
    card.el.dataset.status = s;
    card.badge.textContent = open ? "Needs your approval" : DECIDED[s] || `Decided: ${s}`;
    if (s === "reject" && card.reason) card.badge.textContent = `Rejected: ${card.reason}`;
    const noArgs = !card.args || (typeof card.args === "object" && Object.keys(card.args).length === 0);
    card.what.replaceChildren(el("strong", null, card.tool), open ? (noArgs ? " wants to run (without arguments)." : " wants to run with:") : (noArgs ? " asked to run (without arguments)." : " asked to run with:"));
    card.argsEl.hidden = noArgs;
    card.when.replaceChildren();
    if (s === "pending" && card.expires) card.when.append("expires ", timeEl(card.expires, dayAndTime(card.expires)));
    if (s === "sending") card.when.textContent = "sending your decision…";
    card.actions.hidden = !open || !card.form.hidden;
    for (const b of card.actions.querySelectorAll("button")) b.disabled = s === "sending";
    for (const b of card.form.querySelectorAll("button")) b.disabled = s === "sending";
    if (!open) { card.form.hidden = true; card.form.replaceChildren(); }
    card.outcome.replaceChildren(...outcome(card));
  }
  function outcome(card) {
    switch (card.status) {
      case "approve": return [el("p", null, `${card.tool} ran with these arguments.`)];
      case "edit": return card.ran ? [el("p", null, `${card.tool} ran with:`), json(card.ran)] : [el("p", null, `${card.tool} ran with edited arguments.`)];
      case "reject": return [el("p", null, `${card.tool} did not run; the agent was told${card.reason ? " why" : ""}.`)];
      case "respond": return [el("p", null, card.answer ? `${card.tool} did not run; the agent got this answer instead: ${card.answer}` : `${card.tool} did not run; the agent got an answer instead.`)];
      case "expired": return [el("p", null, `Nobody decided in time; ${card.tool} did not run.`)];
      case "stopped": return [el("p", null, `The run ended before a decision; ${card.tool} did not run.`)];
      default: return [];
    }
  }

  // ---- Deciding -----------------------------------------------------------------------------

  function decide(card, payload) {
    if (card.status !== "pending") return;
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      card.error.textContent = "Not connected right now: the page is reconnecting. Try again in a moment.";
      return;
    }
    const request_id = `approval-${nextAsk++}`;
    card.sent = payload;
    card.error.textContent = "";
    asked.set(request_id, card);
    send({ type: "resolve_approval", request_id, payload: { run_id: card.runId, tool_call_id: card.callId, ...payload } });
    card.status = "sending";
    paint(card);
  }
  function toolList() {
    if (!tools) tools = fetch("/tools").then((r) => (r.ok ? r.json() : [])).catch(() => []);
    return tools;
  }
  const typeName = (p) => (Array.isArray(p.enum) ? `one of ${p.enum.map((v) => JSON.stringify(v)).join(", ")}` : Array.isArray(p.type) ? p.type.join(" or ") : p.type || "any value");
  // The tool schema's fields as a hint: name, type, whether required, and what it is.
  function fieldsHint(schema) {
    const props = (schema && schema.properties) || {};
    const required = new Set((schema && schema.required) || []);
    const names = Object.keys(props);
    if (!names.length) return el("p", "approval-hint", "This tool takes no fields: send {}.");
    const list = el("ul", "approval-fields");
    for (const name of names) {
      const p = props[name] || {};
      const li = el("li");
      li.append(el("code", null, name), ` ${typeName(p)}${required.has(name) ? ", required" : ", optional"}${p.description ? ` — ${p.description}` : ""}`);
      list.append(li);
    }
    return list;
  }
  function formButtons(primary, cls, onCancel) {
    const row = el("div", "approval-actions");
    const go = el("button", cls, primary);
    go.type = "submit";
    row.append(go, button("Cancel", "secondary", onCancel));
    return row;
  }
  function closeForm(card) {
    card.form.hidden = true;
    card.form.replaceChildren();
    card.actions.hidden = card.status !== "pending" && card.status !== "sending";
    card.error.textContent = "";
  }
  async function openEditor(card) {
    if (card.status !== "pending") return;
    const form = el("form", "approval-editor");
    form.noValidate = true;
    const area = el("textarea", "approval-json");
    area.value = JSON.stringify(card.args, null, 2);
    area.rows = Math.min(12, Math.max(3, area.value.split("\n").length + 1));
    area.spellcheck = false;
    const label = el("label", null, `Arguments for ${card.tool}, as a JSON object`);
    label.append(area);
    const hint = el("div", "approval-hint-box");
    hint.append(el("p", "approval-hint", "Loading the tool's fields…"));
    form.append(label, hint, formButtons("Run with these arguments", "run-edited", () => closeForm(card)));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      let args;
      try { args = JSON.parse(area.value); } catch (err) {
        card.error.textContent = `That is not valid JSON: ${err.message}`;
        area.focus();
        return;
      }
      if (!args || typeof args !== "object" || Array.isArray(args)) {
        card.error.textContent = "The arguments must be a JSON object, in braces: {\"name\": value}.";
        area.focus();
        return;
      }
      decide(card, { decision: "edit", arguments: args });
    });
    form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeForm(card); });
    card.actions.hidden = true;
    card.error.textContent = "";
    card.form.replaceChildren(form);
    card.form.hidden = false;
    area.focus();
    form.scrollIntoView({ block: "nearest" });
    const tool = (await toolList()).find((t) => t.name === card.tool);
    hint.replaceChildren(tool ? el("p", "approval-hint", `${card.tool}'s fields:`) : el("p", "approval-hint", `The fields of ${card.tool} could not be loaded; the server checks them when you send.`));
    if (tool) hint.append(fieldsHint(tool.parameters));
  }
  function openReject(card) {
    if (card.status !== "pending") return;
    const form = el("form", "approval-reject");
    const reason = el("input", "approval-reason");
    reason.maxLength = 500;
    reason.placeholder = "not now";
    const label = el("label", null, "Why? (optional; the agent is told)");
    label.append(reason);
    form.append(label, formButtons("Reject", "reject-confirm", () => closeForm(card)));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const message = reason.value.trim();
      decide(card, message ? { decision: "reject", message } : { decision: "reject" });
    });
    form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closeForm(card); });
    card.actions.hidden = true;
    card.error.textContent = "";
    card.form.replaceChildren(form);
    card.form.hidden = false;
    reason.focus();
    form.scrollIntoView({ block: "nearest" });
  }

  // `approval_resolved`: the decision, from this tab or any other.
  function resolve(run, e) {
    const d = e.data || {};
    const card = run.cards && run.cards.get(d.tool_call_id);
    if (!card) return;
    for (const [id, c] of asked) if (c === card) asked.delete(id);
    card.status = d.decision;
    if (d.decision === "reject" && card.sent && card.sent.message) card.reason = card.sent.message;
    if (d.decision === "edit" && card.sent && card.sent.arguments) card.ran = card.sent.arguments;
    if (d.decision === "respond" && card.sent && card.sent.message) card.answer = card.sent.message;
    card.error.textContent = "";
    paint(card);
    if (run.el.dataset.state === "waiting" && !pendingIn(run)) {
      run.el.dataset.state = "running";
      run.status.textContent = "";
    }
  }
  // The decided call's own events say what a decision made elsewhere was: the arguments it
  // ran with, the reason it was rejected, the answer given instead.
  function followUp(run, e) {
    const d = e.data || {};
    const card = run.cards && run.cards.get(d.tool_call_id);
    if (!card) return;
    if (e.type === "tool_executing" && card.status === "edit") card.ran = d.arguments;
    else if (e.type === "tool_completed" && card.status === "reject" && d.result && typeof d.result.error === "string" && d.result.error.startsWith(REJECTED_PREFIX)) card.reason = d.result.error.slice(REJECTED_PREFIX.length);
    else if (e.type === "tool_completed" && card.status === "respond" && typeof d.result === "string") card.answer = d.result;
    else return;
    paint(card);
  }
  // The run ended (cancelled, failed): its undecided calls can no longer be decided.
  function settle(run) {
    if (!run.cards) return;
    for (const card of run.cards.values()) {
      if (card.status !== "pending" && card.status !== "sending") continue;
      card.status = "stopped";
      paint(card);
    }
  }
  // An `error` frame: true when it refuses a decision of this page, shown on its card.
  function refused(f) {
    const card = f.request_id && asked.get(f.request_id);
    if (!card) return false;
    asked.delete(f.request_id);
    card.error.textContent = REFUSED[f.code] ? `${REFUSED[f.code]} (${f.message})` : `The server did not accept this decision: ${f.message}`;
    if (card.status === "sending") {
      card.status = FINAL.has(f.code) ? "closed" : "pending";
      paint(card);
      const field = card.status === "pending" && !card.form.hidden && card.form.querySelector("textarea, input");
      if (field) field.focus();
    }
    card.error.scrollIntoView({ block: "nearest" });
    return true;
  }

  window.approvals = { track, refresh, mark, reset, show, resolve, followUp, settle, refused };
  if (window.chat) window.chat.approvals = { waiting, asked };
})();
