// The chat page's script, served as /static/app.js: the page's Content Security Policy runs no
// inline script, so every handler here is attached with addEventListener.
"use strict";
// One connection per tab. The user's stream is resumed by (epoch, seq) after any drop, and
// every event is shown once: frames at or below the last seq seen are counted and skipped.
// With a history store, the sidebar lists the user's threads and the conversation shows the
// open one; without, the conversation shows every run of this session.
const $ = (id) => document.getElementById(id);
const SESSION_KEY = "agent-server.session";
const stats = { events: 0, duplicates: 0, gaps: 0, resumed: 0, failedResumes: 0, connects: 0, history: 0, stored: 0, authFailures: 0 };
const state = { token: null, devUser: null, user: null, ws: null, epoch: null, lastSeq: 0, backoff: 500, requests: new Map(), runs: new Map(), nextRequest: 1, historyTried: false, loadingHistory: false, thread: null, parked: null, history: null, agents: [] };
window.chat = { stats, state, dropConnection: () => state.ws && state.ws.close(4999, "dropped by the page") };
// What the Content Security Policy blocked on this page (the browser tests expect none).
stats.cspViolations = 0;
document.addEventListener("securitypolicyviolation", (e) => { stats.cspViolations += 1; console.warn("blocked by the page's CSP:", e.violatedDirective, e.blockedURI); });

// What an error code means for the person typing, and what to do about it.
const PLAIN = {
  frame_too_large: "Your message is too long for this server. Shorten it, or send it in parts.",
  rate_limited: "You are sending messages faster than this server allows. Wait a few seconds, then send again.",
  too_many_runs: "You already have as many answers running as this server allows. Wait for one to finish, or stop one.",
  too_many_engines: "You have too many conversations running at once. Wait for one to finish.",
  shutting_down: "The server is restarting. Wait a moment, then send again.",
  unknown_agent: "That agent is not available on this server. Pick another one.",
  invalid_agent: "That agent name is not valid. Pick an agent from the list.",
  thread_not_found: "This conversation no longer exists. Start a new conversation.",
  invalid_field: "The server could not accept this message.",
  missing_field: "The server could not accept this message.",
  unavailable: "The server cannot reach a service it needs right now. Wait a moment, then send again.",
  internal_error: "The server failed to start the answer. Try again.",
  thread_busy: "This conversation is still answering, and this server does not queue messages. Send again when the answer ends, or press \u201cSend now (interrupt)\u201d to stop it and send this message.",
  thread_waiting_for_approval: "This conversation waits for your decision on a tool call. Decide it above, or press \u201cSend now (interrupt)\u201d to stop that answer and send this message.",
  budget_exceeded: "Your usage budget on this server is used up. Your message is still here: send it again once the budget resets.",
};
// Refusals that are no fault: the message waits in the composer until the thread can take it,
// and the notice says all there is (the server's own words speak of the protocol).
const BUSY = new Set(["thread_busy", "thread_waiting_for_approval"]);
// A spent budget is said by usage.js, with when it resets in the reader's time.
const plain = (f) => (BUSY.has(f.code) ? PLAIN[f.code] : (f.code === "budget_exceeded" && usageHook("refused", f)) || `${PLAIN[f.code] || "The server refused this message."} (${f.message})`);

// A notice at the top; all but errors go by themselves after a while.
function notice(text, kind) {
  const p = document.createElement("p");
  p.textContent = text;
  if (kind) p.className = kind;
  $("notices").prepend(p);
  while ($("notices").children.length > 3) $("notices").lastChild.remove();
  if (kind !== "error") setTimeout(() => p.remove(), 10000);
}
function clearNotices() { $("notices").replaceChildren(); }
function composerNotice(text, kind) {
  $("composer-notice").textContent = text || "";
  $("composer-notice").hidden = !text;
  if (kind) $("composer-notice").dataset.kind = kind; else delete $("composer-notice").dataset.kind;
}
function setStatus(name, text) {
  $("status").dataset.state = name;
  $("status").textContent = text;
}
const clock = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = (ms) => new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
function timeEl(ms, text) {
  const t = document.createElement("time");
  t.dateTime = new Date(ms).toISOString();
  t.textContent = text;
  t.title = dayAndTime(ms);
  return t;
}
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const json = (v) => { const p = el("pre", "json"); p.textContent = JSON.stringify(v, null, 2); return p; };
// Tool-call approvals live in approvals.js (window.approvals), messages sent into a busy
// thread (queued, steered) in multitask.js (window.multitask), and the usage line in usage.js
// (window.usage); without them the page still works.
function approvalHook(hook, ...args) { const a = window.approvals; return a && a[hook] ? a[hook](...args) : undefined; }
function multitaskHook(hook, ...args) { const m = window.multitask; return m && m[hook] ? m[hook](...args) : undefined; }
// What the user's runs used this budget period: the line under the composer (usage.js).
function usageHook(hook, ...args) { const u = window.usage; return u && u[hook] ? u[hook](...args) : undefined; }

// Markdown, sanitized: marked renders, with any raw HTML in the answer shown as text (a
// model that writes `<script>` shows `<script>`), and DOMPurify keeps only safe HTML of what
// is left. Without them (the scripts failed to load) the answer is shown as plain text.
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" })[c]);
if (window.marked) marked.use({ renderer: { html: (token) => escapeHtml(token.text) } });
function renderMarkdown(target, text) {
  if (window.marked && window.DOMPurify) target.innerHTML = DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: true }));
  else target.textContent = text;
  for (const a of target.querySelectorAll("a")) { a.target = "_blank"; a.rel = "noopener noreferrer"; }
}

// ---- Signing in and out -------------------------------------------------------------------

const authHeaders = () => ({ authorization: `Bearer ${state.token}` });
// Who the token is for: { user } when the server accepts it, { refused } with its reason when
// it does not, { offline } when the server cannot be reached.
async function whoAmI(token) {
  try {
    const res = await fetch("/v1/me", { headers: { authorization: `Bearer ${token}` } });
    const body = await res.json().catch(() => ({}));
    if (res.ok) return { user: body.user_id };
    if (res.status === 401) return { refused: body.message || "the token was refused" };
    return { offline: `HTTP ${res.status}` };
  } catch (err) { return { offline: String(err) }; }
}
async function devToken(user) {
  const res = await fetch("/dev/token", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user }) });
  const body = await res.json().catch(() => ({}));
  if (res.ok) return { token: body.token };
  if (res.status === 404) return { refused: "this server has a configured secret, so it hands out no tokens by name: paste a token" };
  return { refused: body.message || `HTTP ${res.status}` };
}
function showSignIn(reason) {
  $("signin-reason").textContent = reason || "";
  $("signin-reason").hidden = !reason;
  $("signin").hidden = false;
  for (const id of ["composer", "signout", "sidebar", "sidebar-toggle"]) $(id).hidden = true;
  $("who").textContent = "";
  setStatus("signed-out", "signed out");
}
async function signIn(token, devUser) {
  const who = await whoAmI(token);
  if (!who.user) {
    showSignIn(who.refused ? `That token was not accepted: ${who.refused}.` : `The server cannot be reached (${who.offline}); try again.`);
    return false;
  }
  Object.assign(state, { token, devUser, user: who.user });
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, devUser }));
  clearNotices();
  $("signin-reason").hidden = true;
  $("who").textContent = who.user;
  $("signin").hidden = true;
  for (const id of ["composer", "signout", "sidebar-toggle"]) $(id).hidden = false;
  $("token").value = "";
  await loadAgents();
  connect();
  usageHook("refresh");
  $("message").focus();
  return true;
}
function signOut(reason) {
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close(1000, "signed out");
  sessionStorage.removeItem(SESSION_KEY);
  Object.assign(state, { token: null, devUser: null, user: null, epoch: null, lastSeq: 0, backoff: 500, historyTried: false, loadingHistory: false, thread: null, parked: null, history: null });
  clearConversation();
  state.requests.clear();
  $("threads").replaceChildren();
  approvalHook("reset");
  usageHook("reset");
  clearNotices();
  composerNotice("");
  showSignIn(reason);
}
$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const pasted = $("token").value.trim();
  if (pasted) { await signIn(pasted, null); return; }
  const user = $("user").value.trim();
  if (!user) { showSignIn("Enter your name, or paste a token."); $("user").focus(); return; }
  const got = await devToken(user).catch((err) => ({ refused: String(err) }));
  if (got.token) await signIn(got.token, user);
  else showSignIn(`Could not sign in: ${got.refused}.`);
});
$("signout").addEventListener("click", () => signOut(""));

// The socket closed: a token the server no longer takes (a restarted dev server has a new
// secret; a token expired) ends at the sign-in form, except that a name sign-in on a dev
// server gets a fresh token by itself. Anything else reconnects with backoff and resumes.
async function recoverSession() {
  const who = await whoAmI(state.token);
  if (!who.refused) return true;
  stats.authFailures += 1;
  if (state.devUser) {
    const got = await devToken(state.devUser).catch((err) => ({ refused: String(err) }));
    if (got.token) {
      state.token = got.token;
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token: got.token, devUser: state.devUser }));
      return true;
    }
  }
  signOut(`Your session is no longer valid (${who.refused}). Sign in again.`);
  return false;
}

async function loadAgents() {
  const res = await fetch("/agents").catch(() => null);
  state.agents = res && res.ok ? await res.json() : [];
  const select = $("agent");
  const kept = select.value;
  select.replaceChildren();
  for (const a of state.agents) {
    const option = el("option", null, a.name);
    option.value = a.name;
    option.title = a.description;
    select.append(option);
  }
  if (kept && state.agents.some((a) => a.name === kept)) select.value = kept;
  describeAgent();
  multitaskHook("composer");
}
function describeAgent() {
  const a = state.agents.find((x) => x.name === $("agent").value);
  $("agent-description").textContent = a ? a.description : "";
}
$("agent").addEventListener("change", describeAgent);

// ---- The connection -----------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let url = `${scheme}://${location.host}/ws?token=${encodeURIComponent(state.token)}`;
  if (state.epoch) url += `&epoch=${encodeURIComponent(state.epoch)}&after_seq=${state.lastSeq}`;
  setStatus("connecting", "connecting…");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onmessage = (m) => onFrame(JSON.parse(m.data));
  ws.onclose = async (e) => {
    if (state.ws !== ws) return;
    const wait = Math.min(state.backoff, 10000);
    state.backoff = Math.min(state.backoff * 2, 10000);
    const why = e.code === 1001 ? "the server restarted" : e.code === 4008 ? "the connection fell behind" : e.code === 4009 ? "the server lost the stream" : "the connection dropped";
    setStatus("reconnecting", `reconnecting in ${(wait / 1000).toFixed(1)} s`);
    notice(`Disconnected (${why}); reconnecting…`, "warn");
    setTimeout(async () => {
      if (state.ws !== ws) return;
      if (await recoverSession()) connect();
    }, wait);
  };
}

function onFrame(f) {
  if (typeof f.seq === "number") return onEvent(f);
  switch (f.type) {
    case "connection_established": return onEstablished(f);
    case "run_accepted": {
      const request = state.requests.get(f.request_id);
      if (!request) break;
      state.requests.delete(f.request_id);
      state.thread = f.thread_id;
      if ($("message").value === request.message) $("message").value = "";
      composerNotice("");
      // A steered message joined the running run (f.run_id is that run's); a queued one waits
      // for its turn (its agent_started comes later).
      if (f.steered) multitaskHook("steered", f.run_id, request.message);
      else runView(f.run_id, null, request.agent, request.message, f.thread_id, f.queued ? { position: f.position } : null);
      multitaskHook("composer");
      refreshThreads();
      break;
    }
    case "error": {
      if (approvalHook("refused", f)) break;
      // A refusal of what was just sent (a frame too large to parse carries no request id)
      // shows next to the composer, where the text stays: nothing typed is lost.
      const mine = f.request_id ? state.requests.has(f.request_id) : state.requests.size > 0;
      if (mine) {
        if (f.request_id) state.requests.delete(f.request_id); else state.requests.clear();
        composerNotice(plain(f), BUSY.has(f.code) ? "busy" : f.code === "budget_exceeded" ? "budget" : null);
        // The page never asks for `reject`: this server refuses by default what the page queues.
        if (f.code === "thread_busy") { state.defaultRejects = true; multitaskHook("composer"); }
        $("message").focus();
      } else notice(plain(f), "error");
      break;
    }
  }
}

function onEstablished(f) {
  stats.connects += 1;
  state.backoff = 500;
  setStatus("connected", "connected");
  for (const p of [...$("notices").querySelectorAll("p.warn")]) p.remove();
  approvalHook("refresh");
  if (!f.resume && !state.historyTried) {
    // A new tab: show the user's latest conversation from the server's history; a server
    // that keeps none replays its stream's log instead, so every tab shows the same runs.
    state.historyTried = true;
    state.epoch = f.epoch;
    state.lastSeq = f.last_seq;
    openThread(null).then((shown) => { if (!shown && f.last_seq > 0) reloadWithHistory(f.epoch); });
    return;
  }
  if (state.loadingHistory) {
    state.loadingHistory = false;
    if (f.resume && f.resume.status === "ok") stats.history = f.resume.replayed;
    else { notice("Older activity is no longer available; showing new activity."); state.lastSeq = f.last_seq; }
  } else if (f.resume && f.resume.status === "ok") {
    stats.resumed += f.resume.replayed;
    notice(`Reconnected and resumed: ${f.resume.replayed} missed event(s) replayed.`);
  } else if (f.resume) {
    // What this page showed cannot be continued (server restart, expiry): say so, and show
    // what the server has now: the stored conversation, or its new stream from the start.
    stats.failedResumes += 1;
    notice(`Reconnected, but missed events could not be replayed (${f.resume.reason}); reloading.`, "warn");
    clearConversation();
    state.lastSeq = f.last_seq;
    state.epoch = f.epoch;
    openThread(state.thread).then((shown) => { if (!shown && f.last_seq > 0) reloadWithHistory(f.epoch); });
    return;
  } else {
    state.lastSeq = f.last_seq;
  }
  state.epoch = f.epoch;
}

// Reconnects resuming from the start of `epoch`, so the server replays its log (up to 1,000
// events or 10 minutes) into this page. Used by a new tab, and after a failed resume.
function reloadWithHistory(epoch) {
  state.loadingHistory = true;
  state.epoch = epoch;
  state.lastSeq = 0;
  const old = state.ws;
  state.ws = null;
  old.close(1000, "reloading with history");
  connect();
}

// ---- Threads (the history API) ------------------------------------------------------------

async function getJson(path) {
  const r = await fetch(path, { headers: authHeaders() });
  if (r.status === 429) {
    const body = await r.json().catch(() => ({}));
    notice(`The server is limiting requests from you: ${body.message || "wait a moment"}.`, "warn");
  }
  return r.ok ? r.json() : null;
}
// Lists the user's threads in the sidebar; false when the server keeps no history.
async function refreshThreads() {
  if (state.history === false) return false;
  if (state.renaming) { state.refreshAfterRename = true; return true; }
  const list = await getJson("/v1/threads?limit=50").catch(() => null);
  if (!list) { if (state.history === null) state.history = false; return false; }
  state.history = true;
  $("sidebar").hidden = false;
  $("threads-empty").hidden = list.threads.length > 0;
  const items = list.threads.map((t) => {
    const li = el("li");
    li.dataset.threadId = t.thread_id;
    if (t.thread_id === state.thread) li.setAttribute("aria-current", "true");
    const open = el("button", "open");
    open.type = "button";
    open.append(el("span", "title", t.title || "(untitled)"), timeEl(t.updated_ms, dayAndTime(t.updated_ms)));
    open.addEventListener("click", () => { closeSidebar(); openThread(t.thread_id); });
    const del = el("button", "delete", state.armed === t.thread_id ? "Delete?" : "Delete");
    if (state.armed === t.thread_id) del.dataset.armed = "1";
    del.type = "button";
    del.title = "Delete this conversation for good";
    del.addEventListener("click", () => deleteThread(t.thread_id, del));
    const rename = el("button", "rename", "Rename");
    rename.type = "button";
    rename.title = "Rename this conversation";
    rename.addEventListener("click", () => renameThread(t, li));
    li.append(open, rename, del);
    return li;
  });
  $("threads").replaceChildren(...items);
  approvalHook("mark");
  return true;
}
// Shows thread `id` (or the newest, for null) from the history, and makes it the one the next
// message continues. False when the server keeps no history.
async function openThread(id) {
  state.parked = [];
  try {
    if (!(await refreshThreads())) return false;
    const first = $("threads").querySelector("li");
    const wanted = id && $("threads").querySelector(`li[data-thread-id="${CSS.escape(id)}"]`) ? id : first && first.dataset.threadId;
    clearConversation();
    state.thread = wanted || null;
    stats.stored = 0;
    markCurrent();
    if (!wanted) return true;
    const thread = await getJson(`/v1/threads/${encodeURIComponent(wanted)}`);
    if (!thread) return true;
    for (const r of thread.runs) {
      const run = await getJson(`/v1/runs/${encodeURIComponent(r.run_id)}`);
      if (!run) continue;
      // A run accepted but not started yet has no events: it waits in the thread's queue.
      const waiting = r.status === "running" && run.events.length === 0;
      const view = runView(r.run_id, null, r.agent, r.message, r.thread_id, waiting ? { position: null } : null);
      for (const e of run.events) render(e, "stored");
      // Interrupted without an ending of its own: its server stopped (a run a newer message
      // interrupted ended with agent_cancelled, shown as such).
      if (view && r.status === "interrupted" && live(view)) finish(view, "interrupted", "interrupted: the server stopped during this answer");
    }
    stats.stored = thread.runs.length;
    scrollToEnd(true);
    return true;
  } catch (err) {
    notice(`Could not load your conversations: ${err}`, "warn");
    return false;
  } finally {
    const parked = state.parked || [];
    state.parked = null;
    for (const e of parked) render(e, e.seq);
    multitaskHook("composer");
  }
}
// Turns a sidebar item into a title field: Enter (or leaving it) saves, Escape keeps the old
// title. The list is not redrawn under the field meanwhile.
function renameThread(t, li) {
  const input = el("input", "rename-input");
  input.value = t.title;
  input.maxLength = 120;
  input.setAttribute("aria-label", "New title");
  state.renaming = true;
  li.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== t.title) {
      const res = await fetch(`/v1/threads/${encodeURIComponent(t.thread_id)}`, { method: "PATCH", headers: { ...authHeaders(), "content-type": "application/json" }, body: JSON.stringify({ title }) }).catch(() => null);
      if (!res || !res.ok) {
        const body = res ? await res.json().catch(() => ({})) : {};
        notice(`Could not rename that conversation: ${body.message || "the server cannot be reached"}.`, "error");
      }
    }
    state.renaming = false;
    state.refreshAfterRename = false;
    refreshThreads();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); } else if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
}
function markCurrent() {
  for (const li of $("threads").children) {
    if (li.dataset.threadId === state.thread) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
  }
}
// The first click arms the button (for a few seconds, across re-renders of the list), the
// second deletes.
async function deleteThread(id, button) {
  if (state.armed !== id) {
    state.armed = id;
    button.dataset.armed = "1";
    button.textContent = "Delete?";
    setTimeout(() => {
      if (state.armed !== id) return;
      state.armed = null;
      const b = $("threads").querySelector(`li[data-thread-id="${CSS.escape(id)}"] .delete`);
      if (b) { delete b.dataset.armed; b.textContent = "Delete"; }
    }, 4000);
    return;
  }
  state.armed = null;
  const res = await fetch(`/v1/threads/${encodeURIComponent(id)}`, { method: "DELETE", headers: authHeaders() }).catch(() => null);
  if (!res || !res.ok) { notice("Could not delete that conversation; try again.", "error"); return; }
  if (state.thread === id) newConversation();
  refreshThreads();
}
function newConversation() {
  state.thread = null;
  clearConversation();
  markCurrent();
  closeSidebar();
  $("message").focus();
}
$("new-thread").addEventListener("click", newConversation);
function closeSidebar() { $("sidebar").classList.remove("open"); $("sidebar-toggle").setAttribute("aria-expanded", "false"); }
$("sidebar-toggle").addEventListener("click", () => {
  const open = $("sidebar").classList.toggle("open");
  $("sidebar-toggle").setAttribute("aria-expanded", String(open));
});

// ---- The conversation ---------------------------------------------------------------------

// Whether a run belongs in the view: with threads, only the open thread's runs show.
const belongs = (threadId) => !state.history || !threadId || threadId === state.thread;
// Whether a run shown has not ended (running, or waiting for an approval or the budget).
const live = (run) => run.el.dataset.state === "running" || run.el.dataset.state === "waiting";
// Empties the conversation (and the messages waiting their turn in it).
function clearConversation() {
  state.runs.clear();
  $("conversation").replaceChildren();
  $("queue").replaceChildren();
  multitaskHook("composer");
}
function cancelRun(runId) { return send({ type: "cancel_run", payload: { run_id: runId } }); }

// A run's view, made on its first sign (its run_accepted, or its first event). A run accepted
// `queued` ({ position }) waits below the conversation until its agent_started (multitask.js).
function runView(runId, parentId, agent, message, threadId, queued) {
  let run = state.runs.get(runId);
  if (run) return run;
  const parent = parentId && state.runs.get(parentId);
  if (parentId ? !parent : !belongs(threadId)) return null;
  const root = el(parentId ? "section" : "article", parentId ? "run sub" : "run");
  root.dataset.runId = runId;
  root.dataset.state = "running";
  const timeline = el("ol", "timeline");
  const subs = el("div", "subs");
  const answer = el("div", parentId ? "answer sub-answer" : "answer");
  const status = el("span", "run-state");
  run = { id: runId, el: root, status, timeline, subs, answer, text: "", title: null, seen: new Set(), steps: 0, agent, parent, threadId };
  if (parentId) {
    run.title = el("div", "sub-head", `sub-run · ${agent}: ${message}`);
    root.append(run.title, timeline, subs, answer);
    parent.subs.append(root);
  } else {
    const bubble = el("div", "bubble");
    run.userText = el("div", "text", message);
    run.userTime = el("time");
    bubble.append(run.userText, run.userTime);
    const reply = el("div", "reply");
    const head = el("div", "reply-head");
    run.agentTime = el("time");
    head.append(el("span", "agent-name", agent), run.agentTime, status);
    const stop = el("button", "secondary stop", "Stop");
    stop.type = "button";
    stop.addEventListener("click", () => cancelRun(runId));
    head.append(stop);
    run.details = el("details", "steps");
    run.details.open = true;
    run.summary = el("summary", null, "Working…");
    run.summary.addEventListener("click", () => { run.toggled = true; });
    run.details.append(run.summary, timeline, subs);
    const typing = el("div", "typing");
    typing.setAttribute("aria-label", "the agent is answering");
    typing.append(el("span"), el("span"), el("span"));
    run.error = el("p", "run-error");
    reply.append(head, run.details, typing, answer, run.error);
    root.append(bubble, reply);
  }
  state.runs.set(runId, run);
  if (!parentId && !(queued && multitaskHook("queue", run, queued.position))) $("conversation").append(root);
  scrollToEnd(false);
  return run;
}

function row(run, seq, kind, what, cls) {
  const li = el("li", `row ${cls || ""}`);
  li.dataset.seq = seq;
  const w = el("span", "what");
  if (typeof what === "string") w.textContent = what; else w.append(...what);
  li.append(el("span", "kind", kind), w);
  run.timeline.append(li);
  const top = run.parent ? rootOf(run) : run;
  top.steps += 1;
  if (top.summary && top.el.dataset.state === "running") top.summary.textContent = `Working… ${top.steps} step(s)`;
  return li;
}
const rootOf = (run) => { while (run.parent) run = run.parent; return run; };

function finish(run, stateName, text) {
  run.el.dataset.state = stateName;
  run.status.textContent = text;
  approvalHook("settle", run);
  if (run.parent) return;
  multitaskHook("settle", run);
  const stop = run.el.querySelector(".reply-head .stop");
  if (stop) stop.remove();
  run.summary.textContent = `Steps (${run.steps})`;
  run.details.hidden = run.steps === 0;
  if (!run.toggled) run.details.open = false;
}

function onEvent(e) {
  if (e.seq <= state.lastSeq) { stats.duplicates += 1; return; }
  if (e.seq !== state.lastSeq + 1) stats.gaps += 1;
  state.lastSeq = e.seq;
  stats.events += 1;
  // A run of the user's ended (in any thread), or one waits for the budget: what it used
  // shows in the usage line.
  if ((!e.parent_run_id && TERMINAL.has(e.type)) || e.type === "budget_exhausted") usageHook("soon");
  if (state.parked) state.parked.push(e);
  else render(e, e.seq);
}

const pendingPaint = new Set();
function paintAnswer(run) {
  if (pendingPaint.has(run)) return;
  pendingPaint.add(run);
  requestAnimationFrame(() => {
    if (!pendingPaint.delete(run)) return;
    renderMarkdown(run.answer, run.text);
    scrollToEnd(false);
  });
}
function scrollToEnd(always) {
  const s = $("scroller");
  if (always || s.scrollHeight - s.scrollTop - s.clientHeight < 120) s.scrollTop = s.scrollHeight;
}

// Shows one event (live, or `stored` from the history); an event already shown (the stored
// conversation and the live stream can overlap by a few events) is skipped.
function render(e, seq) {
  const d = e.data || {};
  approvalHook("track", e, seq);
  if (!e.parent_run_id && !belongs(e.thread_id)) { if (e.type === "agent_started") refreshThreads(); return; }
  const run = runView(e.run_id, e.parent_run_id, e.agent_name, d.message || "", e.thread_id);
  if (!run) return;
  const key = `${e.type}|${e.timestamp}|${JSON.stringify(d)}`;
  if (run.seen.has(key)) return;
  run.seen.add(key);
  const at = Date.parse(e.timestamp);
  // A queued message's turn came (its agent_started; or any event, when a thread loaded from
  // the history showed a run as not started that had started): it joins the conversation.
  if (run.el.dataset.state === "queued") multitaskHook("start", run);
  // A run that waited for the budget goes on (or ends): its next event says so (usage.js).
  if (run.budgetWait && e.type !== "budget_exhausted") usageHook("wentOn", run, e, at);
  switch (e.type) {
    case "agent_started":
      if (run.title) run.title.textContent = `sub-run · ${e.agent_name}: ${d.message}`;
      else {
        run.userText.textContent = d.message;
        run.userTime.replaceWith(run.userTime = timeEl(at, clock(at)));
      }
      break;
    case "agent_thinking": row(run, seq, "thinking", d.reasoning); break;
    case "tool_executing": row(run, seq, "tool", [el("span", null, d.tool_name), json(d.arguments)]); break;
    case "tool_completed":
      row(run, seq, d.is_error ? "tool failed" : "result", [el("span", null, `${d.tool_name} · ${d.duration_ms} ms`), json(d.result)], d.is_error ? "error" : "");
      break;
    case "agent_response_chunk": run.text += d.delta; run.answer.dataset.seq = seq; paintAnswer(run); break;
    case "agent_completed": {
      if (!run.text && !run.earlier) run.text = typeof d.result === "string" ? d.result : "```json\n" + JSON.stringify(d.result, null, 2) + "\n```";
      // Painted now, not at the next frame: a finished run shows its whole answer.
      pendingPaint.delete(run);
      renderMarkdown(run.answer, run.text);
      finish(run, "completed", `answered in ${(d.duration_ms / 1000).toFixed(1)} s`);
      if (run.agentTime) run.agentTime.replaceWith(run.agentTime = timeEl(at, clock(at)));
      break;
    }
    case "agent_error":
      row(run, seq, "error", `${d.code}: ${d.message}`, "error");
      if (run.error) run.error.textContent = `The agent failed: ${d.message}`;
      finish(run, "error", "failed");
      break;
    case "agent_cancelled": {
      const text = cancelledText(run, d.reason);
      row(run, seq, "stopped", d.reason);
      finish(run, "cancelled", text);
      break;
    }
    // The run paused at a call a person decides: a card where it paused (approvals.js).
    case "approval_requested": approvalHook("show", run, e); break;
    case "approval_resolved": approvalHook("resolve", run, e); break;
    // A message sent while the run ran (multitask "steer"), taken here: shown as the user's
    // message at this point of the answer (multitask.js), or else as a step.
    case "message_received": if (!multitaskHook("received", run, d.message, at)) row(run, seq, "you added", d.message); break;
    // The run's next model call would pass the user's budget: it waits, holding nothing, and
    // goes on by itself when the budget allows. A notice where it paused, with Cancel (usage.js).
    case "budget_exhausted": if (!usageHook("paused", run, e)) row(run, seq, "paused", "Your budget is used up: this run goes on by itself when it resets."); break;
  }
  if (e.type === "tool_executing" || e.type === "tool_completed") approvalHook("followUp", run, e);
  if (!e.parent_run_id && LIFECYCLE.has(e.type)) multitaskHook("composer");
}
const TERMINAL = new Set(["agent_completed", "agent_error", "agent_cancelled"]);
// The events after which a thread may have become busy or free (the composer says which).
const LIFECYCLE = new Set(["agent_started", "agent_completed", "agent_error", "agent_cancelled", "approval_requested", "approval_resolved", "budget_exhausted"]);
// What a cancelled run's state says, by who ended it (and whether it had begun).
function cancelledText(run, reason) {
  if (run.cancelledWhileQueued && run.steps === 0 && !run.text && !run.earlier) return "cancelled before it started";
  if (reason === "interrupted") return "interrupted by your newer message";
  if (reason === "rolled_back") return "rolled back";
  return "stopped";
}

// ---- Sending ------------------------------------------------------------------------------

function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    composerNotice("Not connected right now: the page is reconnecting. Your message is still here; send it again in a moment.");
    return false;
  }
  state.ws.send(JSON.stringify(frame));
  return true;
}
// Sends the composer's message; `multitask` says what it does to a run still going in the
// thread ("interrupt", "steer"), or null for the server's default (it waits its turn).
function sendMessage(multitask) {
  const message = $("message").value;
  if (!message.trim()) { composerNotice("Type a message first."); $("message").focus(); return; }
  let input;
  const raw = $("input").value.trim();
  if (raw) {
    try { input = JSON.parse(raw); } catch { composerNotice("The agent options (under Advanced) must be a JSON object, like {\"tools\":3}."); return; }
  }
  composerNotice("");
  const request_id = `page-${state.nextRequest++}`;
  const agent = $("agent").value;
  const payload = { agent, message };
  if (input) payload.input = input;
  if (state.thread) payload.thread_id = state.thread;
  if (multitask && state.thread) payload.multitask = multitask;
  if (send({ type: "start_agent", request_id, payload })) state.requests.set(request_id, { agent, message });
}
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  sendMessage(null);
});
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
});

// A reload keeps the session (the token lives in this tab's session storage, never in the URL).
(async () => {
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null"); } catch { saved = null; }
  if (!saved || !saved.token) return;
  const who = await whoAmI(saved.token);
  if (who.user) { await signIn(saved.token, saved.devUser || null); return; }
  if (who.refused && saved.devUser) {
    const got = await devToken(saved.devUser).catch(() => ({}));
    if (got.token) { await signIn(got.token, saved.devUser); return; }
  }
  sessionStorage.removeItem(SESSION_KEY);
  showSignIn(who.refused ? `Your session is no longer valid (${who.refused}). Sign in again.` : "");
})();
