// Generated from clients/typescript/page/usage.ts by `npm run bundle` there: do not edit.
"use strict";
(() => {
  // page/usage.ts
  var SETTLE_MS = 700;
  var WARN_AT = 0.8;
  var stats = { fetches: 0, shown: 0 };
  var usage = { off: false, timer: void 0, resetTimer: void 0, generation: 0, last: null };
  var waits = /* @__PURE__ */ new Set();
  var count = (n) => Math.round(n).toLocaleString();
  var dollars = (n) => n > 0 && n < 0.01 ? `$${n.toFixed(4)}` : `$${n.toFixed(2)}`;
  var THIS = { day: "today", week: "this week", month: "this month" };
  var thisPeriod = (p) => THIS[p] ?? `this ${p}`;
  var limited = (limit) => limit !== null && limit !== void 0;
  function resetsText(iso, period) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return iso;
    if (period === "day") {
      return at.toLocaleString(void 0, { weekday: "short", hour: "2-digit", minute: "2-digit" });
    }
    return at.toLocaleDateString(void 0, { month: "short", day: "numeric" });
  }
  function pressure(u) {
    let share = 0;
    let out = false;
    for (const part of [u.tokens, u.cost_usd]) {
      if (!part || !limited(part.limit)) continue;
      share = Math.max(share, part.limit > 0 ? part.used / part.limit : 1);
      if (part.remaining !== null && part.remaining <= 0) out = true;
    }
    return { share, out };
  }
  function text(u) {
    const tokens = u.tokens ?? { used: 0, limit: null, remaining: null };
    const cost = u.cost_usd ?? { used: 0, limit: null, remaining: null };
    const tokenLimit = limited(tokens.limit);
    const costLimit = limited(cost.limit);
    const priced = (u.calls || 0) > (u.unpriced_calls || 0);
    if (!tokenLimit && !costLimit && !u.calls) return "";
    const parts = [];
    if (limited(tokens.limit)) parts.push(`${count(tokens.used)} of ${count(tokens.limit)} tokens`);
    else parts.push(`${count(tokens.used || 0)} tokens`);
    if (limited(cost.limit)) parts.push(`${dollars(cost.used)} of ${dollars(cost.limit)}`);
    else if (priced) parts.push(dollars(cost.used || 0));
    let line = tokenLimit || costLimit ? `${parts.join(" and ")} ${thisPeriod(u.period)}` : `Used ${parts.join(" · ")} ${thisPeriod(u.period)}`;
    if (pressure(u).out) line += ": used up";
    if (tokenLimit || costLimit) line += ` · resets ${resetsText(u.resets_at, u.period)}`;
    return line;
  }
  function paint(u) {
    const line = $("usage");
    const said = text(u);
    const { share, out } = pressure(u);
    line.textContent = said;
    line.hidden = !said;
    if (out) line.dataset.level = "out";
    else if (share >= WARN_AT) line.dataset.level = "warn";
    else delete line.dataset.level;
    const unpriced = u.unpriced_calls ? `, ${u.unpriced_calls} of them without a price (counted in tokens only)` : "";
    line.title = said ? `${u.calls} model call(s) ${thisPeriod(u.period)}${unpriced}` : "";
    if (said) stats.shown += 1;
  }
  async function refresh() {
    clearTimeout(usage.timer);
    usage.timer = void 0;
    if (usage.off || !state.token) return;
    const generation = ++usage.generation;
    stats.fetches += 1;
    let u;
    try {
      u = await pageHttp.request("GET", "/v1/me/usage");
    } catch (error) {
      if (generation !== usage.generation) return;
      if (error?.status === 404) {
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
    clearTimeout(usage.resetTimer);
    const wait = Date.parse(u.resets_at) - Date.now();
    if (wait > 0 && wait < 864e5) usage.resetTimer = setTimeout(refresh, wait + 1e3);
  }
  function soon() {
    if (usage.off || !state.token) return;
    clearTimeout(usage.timer);
    usage.timer = setTimeout(refresh, SETTLE_MS);
  }
  function reset() {
    clearTimeout(usage.timer);
    clearTimeout(usage.resetTimer);
    Object.assign(usage, { off: false, timer: void 0, resetTimer: void 0, last: null });
    waits.clear();
    usage.generation += 1;
    $("usage").hidden = true;
    $("usage").textContent = "";
    delete $("usage").dataset.level;
  }
  function refused(f) {
    void refresh();
    const m = /^(.*?);? it resets at (\S+?)\.?$/.exec(f.message || "");
    const at = m ? new Date(m[2] ?? "") : null;
    const what = m ? m[1] ?? "" : f.message || "your budget on this server is used up";
    const when = at && !Number.isNaN(at.getTime()) ? ` It resets ${at.toLocaleString(void 0, { dateStyle: "medium", timeStyle: "short" })}.` : "";
    const said = what.charAt(0).toUpperCase() + what.slice(1);
    return `${said}.${when} Your message is still here: send it again once the budget resets, or ask the server's operator for a larger budget.`;
  }
  function pausedText(d, period) {
    const cost = d.budget === "cost_usd";
    const used = Number(d.used) || 0;
    const limit = Number(d.limit) || 0;
    const amounts = cost ? `${dollars(used)} of ${dollars(limit)}` : `${count(used)} of ${count(limit)} tokens`;
    const at = new Date(String(d.resets_at));
    const when = Number.isNaN(at.getTime()) ? String(d.resets_at) : at.toLocaleString(void 0, { dateStyle: "medium", timeStyle: "short" });
    const budget = cost ? "cost" : "token";
    const which = period ? thisPeriod(period) : "this period";
    return `Paused: your ${budget} budget for ${which} is used up (${amounts}). This run goes on by itself when the budget resets on ${when}, or when your limit is raised.`;
  }
  function paused(run, e) {
    const root = rootOf(run);
    let wait = run.budgetWait;
    if (!wait) {
      const made = {
        el: el("div", "budget-wait"),
        text: el("p", "budget-wait-text"),
        cancel: el("button", "secondary budget-cancel", "Cancel")
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
  function wentOn(run, e, at) {
    const wait = run.budgetWait;
    if (!wait) return;
    run.budgetWait = null;
    waits.delete(wait);
    const root = rootOf(run);
    wait.cancel.remove();
    if (e.type === "agent_cancelled" || e.type === "agent_error") {
      wait.el.dataset.status = "stopped";
      wait.text.textContent = e.type === "agent_cancelled" ? "Cancelled while it waited for the budget." : "Ended while it waited for the budget.";
    } else {
      wait.el.dataset.status = "resumed";
      wait.text.replaceChildren("Waited for the budget, then went on");
      if (!Number.isNaN(at)) wait.text.append(" at ", timeEl(at, clock(at)));
      wait.text.append(".");
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
    }
  };
})();
