// Generated from clients/typescript/page/approvals.ts by `npm run bundle` there: do not edit.
"use strict";
(() => {
  // page/approvals.ts
  var waiting = /* @__PURE__ */ new Map();
  var asked = /* @__PURE__ */ new Map();
  var during = null;
  var tools = null;
  var nextAsk = 1;
  var REFUSED = {
    approval_not_found: "This call is no longer waiting: its run was stopped or is gone.",
    approval_already_decided: "This call was already decided (perhaps in another tab).",
    approval_expired: "Too late: this call expired before your decision arrived; the tool did not run."
  };
  var FINAL = /* @__PURE__ */ new Set(["approval_not_found", "approval_already_decided", "approval_expired"]);
  var REJECTED_PREFIX = "a person rejected this call: ";
  var TRACKED = [
    "approval_requested",
    "approval_resolved",
    "agent_completed",
    "agent_error",
    "agent_cancelled"
  ];
  function apply(e) {
    const d = e.data ?? {};
    const call = String(d.tool_call_id);
    if (e.type === "approval_requested") {
      waiting.set(call, { run_id: e.run_id, ...e.thread_id ? { thread_id: e.thread_id } : {} });
    } else if (e.type === "approval_resolved") waiting.delete(call);
    else if (e.type === "agent_completed" || e.type === "agent_error" || e.type === "agent_cancelled") {
      for (const [id, w] of waiting) if (w.run_id === e.run_id) waiting.delete(id);
    }
  }
  function track(e, seq) {
    if (typeof seq !== "number") return;
    if (!TRACKED.includes(e.type)) return;
    if (during) during.push(e);
    apply(e);
    mark();
    if (e.type === "approval_requested" && state.history && e.thread_id && e.thread_id !== state.thread) {
      notice(`${String(e.data?.tool_name)} waits for your approval in another conversation (marked in the list).`);
    }
  }
  async function refresh() {
    if (!state.token) return;
    const live = [];
    during = live;
    const list = await pageHttp.request("GET", "/v1/approvals").catch(() => null);
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
  function mark() {
    const count = /* @__PURE__ */ new Map();
    for (const w of waiting.values()) count.set(w.thread_id, (count.get(w.thread_id) ?? 0) + 1);
    for (const li of Array.from($("threads").children)) {
      const n = count.get(li.dataset.threadId) ?? 0;
      const open = li.querySelector(".open");
      let badge = li.querySelector(".approval-mark");
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
  function reset() {
    waiting.clear();
    asked.clear();
    during = null;
    mark();
  }
  function container(run) {
    if (!run.approvals || !run.cards) {
      run.approvals = el("div", "approvals");
      if (run.details) run.details.after(run.approvals);
      else run.answer.before(run.approvals);
      run.cards = /* @__PURE__ */ new Map();
    }
    return { box: run.approvals, cards: run.cards };
  }
  var pendingIn = (run) => [...run.cards?.values() ?? []].some((c) => c.status === "pending" || c.status === "sending");
  function show(run, e) {
    const d = e.data ?? {};
    const { box, cards } = container(run);
    const callId = String(d.tool_call_id);
    if (cards.has(callId)) return;
    const tool = String(d.tool_name);
    const card = {
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
      error: el("p", "approval-error")
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
  function button(text, cls, onClick) {
    const b = el("button", cls, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }
  var DECIDED = {
    approve: "Approved",
    edit: "Approved with changes",
    reject: "Rejected",
    respond: "Answered instead",
    expired: "Expired",
    stopped: "No longer waiting",
    closed: "No longer waiting"
  };
  function paint(card) {
    const s = card.status;
    const open = s === "pending" || s === "sending";
    card.el.dataset.status = s;
    card.badge.textContent = open ? "Needs your approval" : DECIDED[s] ?? `Decided: ${s}`;
    if (s === "reject" && card.reason) card.badge.textContent = `Rejected: ${card.reason}`;
    const args = card.args;
    const noArgs = !args || typeof args === "object" && Object.keys(args).length === 0;
    const what = open ? noArgs ? " wants to run (without arguments)." : " wants to run with:" : noArgs ? " asked to run (without arguments)." : " asked to run with:";
    card.what.replaceChildren(el("strong", void 0, card.tool), what);
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
  function outcome(card) {
    const p = (text) => el("p", void 0, text);
    switch (card.status) {
      case "approve":
        return [p(`${card.tool} ran with these arguments.`)];
      case "edit":
        return card.ran ? [p(`${card.tool} ran with:`), json(card.ran)] : [p(`${card.tool} ran with edited arguments.`)];
      case "reject":
        return [p(`${card.tool} did not run; the agent was told${card.reason ? " why" : ""}.`)];
      case "respond":
        return [
          p(
            card.answer ? `${card.tool} did not run; the agent got this answer instead: ${card.answer}` : `${card.tool} did not run; the agent got an answer instead.`
          )
        ];
      case "expired":
        return [p(`Nobody decided in time; ${card.tool} did not run.`)];
      case "stopped":
        return [p(`The run ended before a decision; ${card.tool} did not run.`)];
      default:
        return [];
    }
  }
  function decide(card, payload) {
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
      payload: { run_id: card.runId, tool_call_id: card.callId, ...payload }
    });
    card.status = "sending";
    paint(card);
  }
  function toolList() {
    tools ?? (tools = fetch("/tools").then((r) => r.ok ? r.json() : []).catch(() => []));
    return tools;
  }
  var typeName = (p) => Array.isArray(p.enum) ? `one of ${p.enum.map((v) => JSON.stringify(v)).join(", ")}` : Array.isArray(p.type) ? p.type.join(" or ") : p.type || "any value";
  function fieldsHint(schema) {
    const props = schema?.properties ?? {};
    const required = new Set(schema?.required ?? []);
    const names = Object.keys(props);
    if (!names.length) return el("p", "approval-hint", "This tool takes no fields: send {}.");
    const list = el("ul", "approval-fields");
    for (const name of names) {
      const p = props[name] ?? {};
      const li = el("li");
      const need = required.has(name) ? ", required" : ", optional";
      li.append(el("code", void 0, name), ` ${typeName(p)}${need}${p.description ? ` — ${p.description}` : ""}`);
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
  function showForm(card, form, field) {
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
  async function openEditor(card) {
    if (card.status !== "pending") return;
    const form = el("form", "approval-editor");
    form.noValidate = true;
    const area = el("textarea", "approval-json");
    area.value = JSON.stringify(card.args, null, 2);
    area.rows = Math.min(12, Math.max(3, area.value.split("\n").length + 1));
    area.spellcheck = false;
    const label = el("label", void 0, `Arguments for ${card.tool}, as a JSON object`);
    label.append(area);
    const hint = el("div", "approval-hint-box");
    hint.append(el("p", "approval-hint", "Loading the tool's fields…"));
    form.append(label, hint, formButtons("Run with these arguments", "run-edited", () => closeForm(card)));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      let args;
      try {
        args = JSON.parse(area.value);
      } catch (err) {
        card.error.textContent = `That is not valid JSON: ${err.message}`;
        area.focus();
        return;
      }
      if (!args || typeof args !== "object" || Array.isArray(args)) {
        card.error.textContent = 'The arguments must be a JSON object, in braces: {"name": value}.';
        area.focus();
        return;
      }
      decide(card, { decision: "edit", arguments: args });
    });
    showForm(card, form, area);
    const tool = (await toolList()).find((t) => t.name === card.tool);
    hint.replaceChildren(
      tool ? el("p", "approval-hint", `${card.tool}'s fields:`) : el(
        "p",
        "approval-hint",
        `The fields of ${card.tool} could not be loaded; the server checks them when you send.`
      )
    );
    if (tool) hint.append(fieldsHint(tool.parameters));
  }
  function openReject(card) {
    if (card.status !== "pending") return;
    const form = el("form", "approval-reject");
    const reason = el("input", "approval-reason");
    reason.maxLength = 500;
    reason.placeholder = "not now";
    const label = el("label", void 0, "Why? (optional; the agent is told)");
    label.append(reason);
    form.append(label, formButtons("Reject", "reject-confirm", () => closeForm(card)));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const message = reason.value.trim();
      decide(card, message ? { decision: "reject", message } : { decision: "reject" });
    });
    showForm(card, form, reason);
  }
  function resolve(run, e) {
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
  function followUp(run, e) {
    const d = e.data ?? {};
    const card = run.cards?.get(String(d.tool_call_id));
    if (!card) return;
    const result = d.result;
    const error = typeof result === "object" && result ? result.error : void 0;
    if (e.type === "tool_executing" && card.status === "edit") card.ran = d.arguments;
    else if (e.type === "tool_completed" && card.status === "reject" && typeof error === "string" && error.startsWith(REJECTED_PREFIX)) {
      card.reason = error.slice(REJECTED_PREFIX.length);
    } else if (e.type === "tool_completed" && card.status === "respond" && typeof result === "string") {
      card.answer = result;
    } else return;
    paint(card);
  }
  function settle(run) {
    if (!run.cards) return;
    for (const card of run.cards.values()) {
      if (card.status !== "pending" && card.status !== "sending") continue;
      card.status = "stopped";
      paint(card);
    }
  }
  function refused(f) {
    const card = f.request_id ? asked.get(f.request_id) : void 0;
    if (!card || !f.request_id) return false;
    asked.delete(f.request_id);
    const plain = REFUSED[f.code];
    card.error.textContent = plain ? `${plain} (${f.message})` : `The server did not accept this decision: ${f.message}`;
    if (card.status === "sending") {
      card.status = FINAL.has(f.code) ? "closed" : "pending";
      paint(card);
      const field = card.status === "pending" && !card.form.hidden ? card.form.querySelector("textarea, input") : null;
      field?.focus();
    }
    card.error.scrollIntoView({ block: "nearest" });
    return true;
  }
  window.approvals = { track, refresh, mark, reset, show, resolve, followUp, settle, refused };
  if (window.chat) window.chat.approvals = { waiting, asked };
})();
