// The chat page's script, bundled into /static/app.js: the page's Content Security Policy runs
// no inline script, so every handler here is attached with addEventListener.
//
// The connection is an `AgentClient` (this package): it reconnects with backoff and jitter,
// resumes the user's stream by (epoch, seq), recovers the runs in flight from the history when
// a resume fails, and hands the page each event once, in order. With a history store, the
// sidebar lists the user's threads and the conversation shows the open one; without, the
// conversation shows every run the server's log still holds.
import { AgentClient } from "../src/client.js";
import type { Notice } from "../src/client.js";
import { AgentClientError } from "../src/errors.js";
import { HttpApi } from "../src/http.js";
import type { ClientFrame, Multitask, SequencedThreadEvent } from "../src/protocol.js";
import { type StreamEvent, eventKey } from "../src/run.js";
import { copies, copyButton, copyCodeButtons } from "./copy.js";
import { closeMenu, menuButton, menuIsOpen } from "./menu.js";

// An event's data, as the page reads it (each event type has its own).
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Data = { [key: string]: any };
/** A run as the page shows it (the fields the other page modules use are in globals.d.ts). */
type Run = PageRun & {
  timeline: HTMLElement;
  subs: HTMLElement;
  text: string;
  title: HTMLElement | null;
  seen: Set<string>;
  steps: number;
  agent: string;
  parent?: Run;
  userText?: HTMLElement;
  userTime?: HTMLElement;
  agentTime?: HTMLElement;
  details?: HTMLDetailsElement;
  summary?: HTMLElement;
  toggled?: boolean;
};

const $ = (id: string): HTMLElement => document.getElementById(id) as HTMLElement;
const input = (id: string) => $(id) as HTMLInputElement;
const SESSION_KEY = "agent-server.session";
const stats = {
  events: 0,
  duplicates: 0,
  gaps: 0,
  resumed: 0,
  failedResumes: 0,
  connects: 0,
  history: 0,
  stored: 0,
  authFailures: 0,
  // What the Content Security Policy blocked on this page (the browser tests expect none).
  cspViolations: 0,
};
const state = {
  token: null as string | null,
  devUser: null as string | null,
  user: null as string | null,
  client: null as AgentClient | null,
  /** The last `seq` the page saw, checked again here: the client must never repeat or skip. */
  lastSeq: null as number | null,
  runs: new Map<string, Run>(),
  thread: null as string | null,
  parked: null as StreamEvent[] | null,
  history: null as boolean | null,
  /** The agents the server offers, each with a few example prompts (optional). */
  agents: [] as { name: string; description: string; steerable?: boolean; examples?: string[] }[],
  defaultRejects: false,
  renaming: false,
  refreshAfterRename: false,
  /** The list was not redrawn while a row's menu was open: it is when the menu closes. */
  refreshAfterMenu: false,
  armed: null as string | null,
};
// Events go through `tap` first when a test sets it (true: it took the event); `deliver`
// shows one.
const chat: {
  stats: typeof stats;
  state: typeof state;
  dropConnection(): void;
  tap: ((e: StreamEvent) => boolean) | null;
  deliver(e: StreamEvent): void;
  approvals?: unknown;
  copies: typeof copies;
} = {
  stats,
  state,
  copies,
  dropConnection: () => state.client?.reconnect(),
  tap: null,
  deliver: (e) => onEvent(e),
};
(window as unknown as { chat: typeof chat }).chat = chat;
document.addEventListener("securitypolicyviolation", (e) => {
  stats.cspViolations += 1;
  console.warn("blocked by the page's CSP:", e.violatedDirective, e.blockedURI);
});

// What an error code means for the person typing, and what to do about it.
const PLAIN: Record<string, string> = {
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
  thread_busy:
    "This conversation is still answering, and this server does not queue messages. Send again when the answer ends, or press \u201cSend now (interrupt)\u201d to stop it and send this message.",
  thread_waiting_for_approval:
    "This conversation waits for your decision on a tool call. Decide it above, or press \u201cSend now (interrupt)\u201d to stop that answer and send this message.",
  budget_exceeded:
    "Your usage budget on this server is used up. Your message is still here: send it again once the budget resets.",
};
// Refusals that are no fault: the message waits in the composer until the thread can take it,
// and the notice says all there is (the server's own words speak of the protocol).
const BUSY = new Set(["thread_busy", "thread_waiting_for_approval"]);
/** A refusal as the server sent it (the other page modules read its fields). */
type Refusal = { type: "error"; code: string; message: string; request_id?: string } & Data;
// A spent budget is said by usage.js, with when it resets in the reader's time.
const plain = (f: Refusal): string =>
  BUSY.has(f.code)
    ? (PLAIN[f.code] as string)
    : (f.code === "budget_exceeded" && (usageHook("refused", f) as string | undefined)) ||
      `${PLAIN[f.code] || "The server refused this message."} (${f.message})`;

// One notice at a time, at the top: a newer one replaces it, and all but errors go by
// themselves after a while (what a notice says is over goes sooner: see onOpen).
function notice(text: string, kind?: string): void {
  const p = document.createElement("p");
  p.textContent = text;
  if (kind) p.className = kind;
  p.setAttribute("role", kind === "error" ? "alert" : "status");
  $("notices").replaceChildren(p);
  if (kind !== "error") setTimeout(() => p.remove(), 10000);
}
function clearNotices(): void {
  $("notices").replaceChildren();
}
function composerNotice(text: string, kind?: string | null): void {
  const n = $("composer-notice");
  n.textContent = text || "";
  n.hidden = !text;
  if (kind) n.dataset.kind = kind;
  else delete n.dataset.kind;
}
function setStatus(name: string, text: string): void {
  $("status").dataset.state = name;
  $("status").textContent = text;
}
const clock = (ms: number) => new Date(ms).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
const dayAndTime = (ms: number) => new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
function timeEl(ms: number, text: string): HTMLElement {
  const t = document.createElement("time");
  t.dateTime = new Date(ms).toISOString();
  t.textContent = text;
  t.title = dayAndTime(ms);
  return t;
}
function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string | null, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function json(v: unknown): HTMLElement {
  const p = el("pre", "json");
  p.textContent = JSON.stringify(v, null, 2);
  return p;
}
// Tool-call approvals live in approvals.js (window.approvals), messages sent into a busy
// thread (queued, steered) in multitask.js (window.multitask), and the usage line in usage.js
// (window.usage); without them the page still works.
type Hooks = Record<string, ((...args: unknown[]) => unknown) | undefined> | undefined;
function hook(module: unknown, name: string, args: unknown[]): unknown {
  const f = (module as Hooks)?.[name];
  return f ? f(...args) : undefined;
}
const approvalHook = (name: string, ...args: unknown[]) => hook(window.approvals, name, args);
const multitaskHook = (name: string, ...args: unknown[]) => hook(window.multitask, name, args);
// What the user's runs used this budget period: the line under the composer (usage.js).
const usageHook = (name: string, ...args: unknown[]) => hook(window.usage, name, args);

// Markdown, sanitized: marked renders, with any raw HTML in the answer shown as text (a
// model that writes `<script>` shows `<script>`), and DOMPurify keeps only safe HTML of what
// is left. Without them (the scripts failed to load) the answer is shown as plain text.
type Marked = { use(o: unknown): void; parse(text: string, o: unknown): string };
type Purify = { sanitize(html: string): string };
const vendor = window as unknown as { marked?: Marked; DOMPurify?: Purify };
const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string);
vendor.marked?.use({ renderer: { html: (token: { text: string }) => escapeHtml(token.text) } });
function renderMarkdown(target: HTMLElement, text: string): void {
  if (vendor.marked && vendor.DOMPurify) {
    target.innerHTML = vendor.DOMPurify.sanitize(vendor.marked.parse(text, { gfm: true, breaks: true }));
  } else target.textContent = text;
  for (const a of target.querySelectorAll("a")) {
    a.target = "_blank";
    a.rel = "noopener noreferrer";
  }
}

// ---- Signing in and out -------------------------------------------------------------------

// Who the token is for: { user } when the server accepts it, { refused } with its reason when
// it does not, { offline } when the server cannot be reached.
async function whoAmI(token: string): Promise<{ user?: string; refused?: string; offline?: string }> {
  try {
    const res = await fetch("/v1/me", { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json().catch(() => ({}))) as Data;
    if (res.ok) return { user: body.user_id };
    if (res.status === 401) return { refused: body.message || "the token was refused" };
    return { offline: `HTTP ${res.status}` };
  } catch (err) {
    return { offline: String(err) };
  }
}
async function devToken(user: string): Promise<{ token?: string; refused?: string }> {
  const res = await fetch("/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = (await res.json().catch(() => ({}))) as Data;
  if (res.ok) return { token: body.token };
  if (res.status === 404) {
    return { refused: "this server has a configured secret, so it hands out no tokens by name: paste a token" };
  }
  return { refused: body.message || `HTTP ${res.status}` };
}
function showSignIn(reason: string): void {
  $("signin-reason").textContent = reason || "";
  $("signin-reason").hidden = !reason;
  $("signin").hidden = false;
  for (const id of ["composer", "signout", "sidebar", "sidebar-toggle"]) $(id).hidden = true;
  $("who").textContent = "";
  setStatus("signed-out", "signed out");
}
async function signIn(token: string, devUser: string | null): Promise<boolean> {
  const who = await whoAmI(token);
  if (!who.user) {
    showSignIn(
      who.refused
        ? `That token was not accepted: ${who.refused}.`
        : `The server cannot be reached (${who.offline}); try again.`,
    );
    return false;
  }
  Object.assign(state, { token, devUser, user: who.user });
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, devUser }));
  clearNotices();
  $("signin-reason").hidden = true;
  $("who").textContent = who.user;
  // A name typed with spaces or capitals stands for a user id of its own: say which.
  if (devUser && devUser !== who.user) notice(`Signed in as ${who.user} (the user id of \u201c${devUser}\u201d).`);
  $("signin").hidden = true;
  for (const id of ["composer", "signout", "sidebar-toggle"]) $(id).hidden = false;
  input("token").value = "";
  await loadAgents();
  // With a history, the conversation comes from it (the newest thread); without, from what
  // the server's log of the stream still holds, replayed by the client.
  const history = await refreshThreads();
  connect(!history);
  if (history) void openThread(null);
  usageHook("refresh");
  $("message").focus();
  return true;
}
function signOut(reason: string): void {
  const client = state.client;
  state.client = null;
  client?.close();
  sessionStorage.removeItem(SESSION_KEY);
  Object.assign(state, {
    token: null,
    devUser: null,
    user: null,
    lastSeq: null,
    thread: null,
    parked: null,
    history: null,
    renaming: false,
  });
  clearConversation();
  $("threads").replaceChildren();
  approvalHook("reset");
  usageHook("reset");
  clearNotices();
  composerNotice("");
  showSignIn(reason);
}
$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const pasted = input("token").value.trim();
  if (pasted) {
    await signIn(pasted, null);
    return;
  }
  const user = input("user").value.trim();
  if (!user) {
    showSignIn("Enter your name, or paste a token.");
    $("user").focus();
    return;
  }
  const got = await devToken(user).catch((err) => ({ refused: String(err), token: undefined }));
  if (got.token) await signIn(got.token, user);
  else showSignIn(`Could not sign in: ${got.refused}.`);
});
$("signout").addEventListener("click", () => signOut(""));

// The client asks for a token again when the server refused the one it had (a restarted dev
// server has a new secret; a token expired) or it is about to expire: a name sign-in on a
// dev server gets a fresh one by itself; otherwise the page ends at the sign-in form.
async function renewToken(client: AgentClient): Promise<string> {
  const token = state.token as string;
  const who = await whoAmI(token);
  if (!who.refused) return token;
  stats.authFailures += 1;
  if (state.devUser) {
    const got = await devToken(state.devUser).catch((err) => ({ refused: String(err), token: undefined }));
    if (got.token && state.client === client) {
      state.token = got.token;
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token: got.token, devUser: state.devUser }));
      return got.token;
    }
  }
  if (state.client === client) signOut(`Your session is no longer valid (${who.refused}). Sign in again.`);
  throw new Error(`the token was refused: ${who.refused}`);
}

async function loadAgents(): Promise<void> {
  const res = await fetch("/agents").catch(() => null);
  state.agents = res && res.ok ? ((await res.json()) as typeof state.agents) : [];
  const select = $("agent") as HTMLSelectElement;
  const kept = select.value;
  select.replaceChildren();
  for (const a of state.agents) {
    const option = el("option", null, a.name);
    option.value = a.name;
    option.title = a.description;
    select.append(option);
  }
  if (kept && state.agents.some((a) => a.name === kept)) select.value = kept;
  delete $("examples-list").dataset.agent;
  describeAgent();
  multitaskHook("composer");
}
function describeAgent(): void {
  const a = state.agents.find((x) => x.name === input("agent").value);
  $("agent-description").textContent = a ? a.description : "";
  showExamples();
}
$("agent").addEventListener("change", describeAgent);

// An empty conversation shows the chosen agent's example prompts (`examples` of `/agents`,
// which an agent may not have): one press sends one. They go with the first message, and
// come back with a new conversation or another agent.
function showExamples(): void {
  const agent = state.agents.find((a) => a.name === input("agent").value);
  const examples = agent?.examples ?? [];
  const empty = !$("conversation").querySelector(".run") && $("queue").childElementCount === 0;
  const show = !!agent && !!state.user && state.parked === null && empty && examples.length > 0;
  $("examples").hidden = !show;
  const list = $("examples-list");
  if (!show || !agent || list.dataset.agent === agent.name) return;
  list.dataset.agent = agent.name;
  $("examples-title").textContent = `Try asking ${agent.name}`;
  list.replaceChildren(
    ...examples.map((text) => {
      const item = el("li");
      const button = el("button", "secondary example", text);
      button.type = "button";
      button.addEventListener("click", () => {
        // Once: they hide while it is sent (and come back if it is refused).
        $("examples").hidden = true;
        void sendMessage(null, text).finally(showExamples);
      });
      item.append(button);
      return item;
    }),
  );
}

// ---- The connection -----------------------------------------------------------------------

const CLOSED_BECAUSE: Record<number, string> = {
  1001: "the server is restarting",
  4008: "the connection was too slow to keep up",
  4009: "the server lost track of your updates",
};
// Why missed updates could not be caught up after a reconnect, in plain words.
const RESUME_FAILED_BECAUSE: Record<string, string> = {
  epoch_changed: "The server restarted while you were disconnected",
  too_old: "You were disconnected too long for the missed updates to be kept",
};

/** Opens the user's stream; `replay`: start at what the server's log still holds. */
function connect(replay: boolean): void {
  let first = true;
  const client: AgentClient = new AgentClient({
    url: location.origin,
    getToken: () => {
      if (first) {
        first = false;
        return state.token as string;
      }
      return renewToken(client);
    },
    backoff: { initialMs: 500, maxMs: 10_000 },
    replay,
  });
  state.client = client;
  state.lastSeq = null;
  setStatus("connecting", "connecting…");
  client.onStateChange((s) => {
    if (state.client !== client) return;
    if (s === "open") onOpen();
    else if (s === "connecting") setStatus("connecting", "connecting…");
  });
  client.onNotice((n) => {
    if (state.client === client) onNotice(n);
  });
  void (async () => {
    for await (const e of client.events()) {
      if (state.client !== client) break;
      // One event the page fails to show must not stop the ones after it.
      try {
        if (!chat.tap || !chat.tap(e)) onEvent(e);
      } catch (err) {
        console.error("the page failed to show an event:", e, err);
      }
    }
  })();
  client.connect().catch((err: unknown) => {
    if (state.client !== client) return;
    signOut(`The server refused your session (${err instanceof Error ? err.message : String(err)}). Sign in again.`);
  });
}

function onOpen(): void {
  stats.connects += 1;
  setStatus("connected", "connected");
  for (const p of [...$("notices").querySelectorAll("p.disconnected")]) p.remove();
  if (!$("composer-notice").dataset.kind && $("composer-notice").textContent?.startsWith("Not connected")) composerNotice("");
  approvalHook("refresh");
}

function onNotice(n: Notice): void {
  switch (n.type) {
    case "disconnected": {
      const why = CLOSED_BECAUSE[n.code] ?? "the network connection dropped";
      setStatus("reconnecting", `reconnecting in ${(n.retryInMs / 1000).toFixed(1)} s`);
      notice(`Connection lost (${why}); reconnecting…`, "warn disconnected");
      return;
    }
    case "resumed":
      stats.resumed += n.replayed;
      notice(
        `Reconnected and resumed: ${n.replayed === 0 ? "nothing was missed" : `${n.replayed} missed update(s) caught up`}.`,
      );
      return;
    case "replayed":
      stats.history = n.replayed;
      return;
    case "resume_failed":
      // What this page showed cannot be continued by the stream (server restart, expiry): the
      // runs in flight come back from the history through the client; the conversation is
      // shown again from the history (or, without one, from the server's new log).
      stats.failedResumes += 1;
      state.lastSeq = null;
      if (stats.connects === 0) {
        notice("Older activity is no longer available; showing new activity.");
        return;
      }
      notice(
        `${RESUME_FAILED_BECAUSE[n.reason] ?? "The missed updates could not be caught up"}: ${
          state.history
            ? "your conversation was reloaded from what the server saved."
            : "what happened meanwhile cannot be shown."
        }`,
        "warn",
      );
      clearConversation();
      if (state.history) void openThread(state.thread);
      return;
    case "run_unrecoverable":
      if (state.history) notice(`Part of an answer could not be fetched again: ${n.message}`, "warn");
      return;
    case "thread_changed":
      threadChanged(n.change);
      return;
    case "error": {
      const f: Refusal = { type: "error", code: n.code, message: n.message, ...n.details };
      if (n.requestId) f.request_id = n.requestId;
      if (approvalHook("refused", f)) return;
      notice(plain(f), "error");
      return;
    }
  }
}

// ---- Threads (the history API) ------------------------------------------------------------

// Says so when the server limits this user's requests; rethrows.
function limited(err: unknown): never {
  if (err instanceof AgentClientError && err.status === 429) {
    notice(`The server is limiting requests from you: ${err.message || "wait a moment"}.`, "warn");
  }
  throw err;
}
// A client for the HTTP calls made before (or without) the connection.
function api(): AgentClient {
  return state.client ?? new AgentClient({ url: location.origin, token: state.token as string });
}
// Lists the user's threads in the sidebar; false when the server keeps no history.
// The list of conversations follows the user's runs wherever they run (another tab, another
// node: the user's stream carries them all): an event of a conversation the list does not
// have (a new one) refreshes it. The history can lag the stream (the run's node writes it in
// batches), so a conversation still missing is looked for again, a few times, each wait
// twice the last.
let threadsTimer: ReturnType<typeof setTimeout> | null = null;
const awaited = new Map<string, number>(); // thread id -> refreshes that did not list it
// The conversations the list shows now (set as it is drawn): asked on every event.
let listedThreads = new Set<string>();
const listed = (id: string) => listedThreads.has(id);
function awaitThread(threadId: string): void {
  if (state.history !== true || listed(threadId) || awaited.has(threadId)) return;
  awaited.set(threadId, 0);
  lookForAwaited(0);
}
function lookForAwaited(delay: number): void {
  if (threadsTimer !== null) return;
  threadsTimer = setTimeout(async () => {
    await refreshThreads();
    threadsTimer = null;
    for (const [id, misses] of awaited) {
      if (listed(id) || misses >= 5) awaited.delete(id);
      else awaited.set(id, misses + 1);
    }
    if (awaited.size) lookForAwaited(250 * 2 ** Math.min(...awaited.values()));
  }, delay);
}
async function refreshThreads(): Promise<boolean> {
  if (state.history === false) return false;
  if (state.renaming) {
    state.refreshAfterRename = true;
    return true;
  }
  // Not under an open menu either: it is redrawn when the menu closes.
  if (menuIsOpen()) {
    state.refreshAfterMenu = true;
    return true;
  }
  const list = await api()
    .listThreads({ limit: 50 })
    .catch(limited)
    .catch(() => null);
  if (!list) {
    if (state.history === null) state.history = false;
    return false;
  }
  state.history = true;
  $("sidebar").hidden = false;
  $("threads-empty").hidden = list.threads.length > 0;
  listedThreads = new Set(list.threads.map((t) => t.thread_id));
  const items = list.threads.map((t) => {
    const li = el("li");
    li.dataset.threadId = t.thread_id;
    if (t.thread_id === state.thread) li.setAttribute("aria-current", "true");
    const open = el("button", "open");
    open.type = "button";
    const updated = Number(t.updated_ms);
    const title = t.title || "(untitled)";
    open.append(el("span", "title", title), timeEl(updated, dayAndTime(updated)));
    open.title = title;
    open.addEventListener("click", () => {
      closeSidebar();
      void openThread(t.thread_id);
    });
    // Rename and Delete, in the row's menu: the title has the row's width.
    const actions = menuButton(
      title,
      () => [
        { label: "Rename", cls: "rename", title: "Rename this conversation", act: () => renameThread(t, li) },
        {
          label: state.armed === t.thread_id ? "Delete?" : "Delete",
          cls: "delete",
          title: "Delete this conversation for good (a second press confirms)",
          keepOpen: true,
          act: (item) => void deleteThread(t.thread_id, item),
        },
      ],
      () => {
        if (!state.refreshAfterMenu) return;
        state.refreshAfterMenu = false;
        void refreshThreads();
      },
    );
    li.append(open, actions);
    return li;
  });
  // A redraw keeps the keyboard where it was: on the same control of the same conversation.
  const focused = document.activeElement as HTMLElement | null;
  const row = focused?.closest("#threads li") as HTMLElement | null;
  const control = focused?.classList.contains("actions") ? "actions" : "open";
  $("threads").replaceChildren(...items);
  if (row?.dataset.threadId) {
    const again = $("threads").querySelector(`li[data-thread-id="${CSS.escape(row.dataset.threadId)}"] .${control}`);
    (again as HTMLElement | null)?.focus();
  }
  approvalHook("mark");
  return true;
}
// Shows thread `id` (or the newest, for null) from the history, and makes it the one the next
// message continues. False when the server keeps no history. Live events that come meanwhile
// are parked, and shown after it (those the stored runs had are skipped).
function openThread(id: string | null): Promise<boolean> {
  return quietly(() => loadThread(id));
}
async function loadThread(id: string | null): Promise<boolean> {
  state.parked = [];
  try {
    if (!(await refreshThreads())) return false;
    const first = $("threads").querySelector("li") as HTMLElement | null;
    const wanted =
      id && $("threads").querySelector(`li[data-thread-id="${CSS.escape(id)}"]`) ? id : first?.dataset.threadId;
    clearConversation();
    state.thread = wanted || null;
    stats.stored = 0;
    markCurrent();
    if (!wanted) return true;
    // One request: the thread with its newest runs' events (older ones on request).
    const page = await api().openThread(wanted, { limit: PAGE_RUNS }).catch(limited).catch(() => null);
    if (!page) return true;
    showStored(page.runs);
    earlierButton(wanted, page.before);
    scrollToEnd(true);
    return true;
  } catch (err) {
    notice(`Could not load your conversations: ${String(err)}`, "warn");
    return false;
  } finally {
    const parked = state.parked || [];
    state.parked = null;
    for (const e of parked) render(e, e.seq ?? "recovered");
    multitaskHook("composer");
    showExamples();
  }
}
/** Runs shown at once when a thread opens; "Show earlier messages" loads as many again. */
const PAGE_RUNS = 30;
type StoredRun = Awaited<ReturnType<AgentClient["openThread"]>>["runs"][number];
// Shows runs from the history (oldest first) in the conversation, after what it shows.
function showStored(runs: StoredRun[]): void {
  for (const r of runs) {
    // A run accepted but not started yet has no events: it waits in the thread's queue.
    const waiting = r.status === "running" && r.events.length === 0;
    const view = runView(r.run_id, null, r.agent, r.message, r.thread_id, waiting ? { position: null } : null);
    for (const e of r.events) render(e as StreamEvent, "stored");
    // Interrupted without an ending of its own: its server stopped (a run a newer message
    // interrupted ended with agent_cancelled, shown as such).
    if (view && r.status === "interrupted" && live(view)) {
      finish(view, "interrupted", "interrupted: the server stopped during this answer");
    }
  }
  stats.stored += runs.length;
}
// The button above a thread's oldest shown run, when it has older ones (`before`).
function earlierButton(threadId: string, before: string | null): void {
  $("conversation").querySelector(".earlier")?.remove();
  if (!before) return;
  const button = el("button", "secondary earlier", "Show earlier messages");
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    await quietly(async () => {
      const page = await api().openThread(threadId, { limit: PAGE_RUNS, before }).catch(limited).catch(() => null);
      if (!page || state.thread !== threadId) {
        button.disabled = false;
        return;
      }
      const top = $("conversation").querySelector(":scope > article");
      showStored(page.runs);
      // Rendered at the end: moved above what was shown, in their order.
      for (const r of page.runs) {
        const view = state.runs.get(r.run_id)?.el;
        if (view?.parentElement === $("conversation") && top) $("conversation").insertBefore(view, top);
      }
      earlierButton(threadId, page.before);
      // The focus was on the button, now gone: it goes to the next one, or the first message.
      const next = $("conversation").querySelector<HTMLElement>(".earlier, :scope > article");
      if (next && !next.matches("button")) next.tabIndex = -1;
      next?.focus();
    });
  });
  $("conversation").prepend(button);
}
// Turns a sidebar item into a title field: Enter (or leaving it) saves, Escape keeps the old
// title. The list is not redrawn under the field meanwhile.
function renameThread(t: { thread_id: string; title: string }, li: HTMLElement): void {
  const field = el("input", "rename-input");
  field.value = t.title;
  field.maxLength = 120;
  field.setAttribute("aria-label", "New title");
  state.renaming = true;
  li.replaceChildren(field);
  field.focus();
  field.select();
  let done = false;
  const finishRename = async (save: boolean, refocus = false) => {
    if (done) return;
    done = true;
    const title = field.value.trim();
    if (save && title && title !== t.title) {
      await api()
        .renameThread(t.thread_id, title)
        .catch((err: unknown) => {
          const why = err instanceof AgentClientError && err.status ? err.message : "the server cannot be reached";
          notice(`Could not rename that conversation: ${why}.`, "error");
        });
    }
    state.renaming = false;
    state.refreshAfterRename = false;
    await refreshThreads();
    // By the keyboard, the focus goes back to where it was: the row's menu button.
    if (refocus) rowOf(t.thread_id)?.querySelector<HTMLElement>(".actions")?.focus();
  };
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      void finishRename(true, true);
    } else if (e.key === "Escape") void finishRename(false, true);
  });
  field.addEventListener("blur", () => void finishRename(true));
}
const rowOf = (id: string) =>
  $("threads").querySelector<HTMLElement>(`li[data-thread-id="${CSS.escape(id)}"]`);
function markCurrent(): void {
  for (const li of $("threads").children) {
    if ((li as HTMLElement).dataset.threadId === state.thread) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
  }
}
// The first press arms the menu's Delete (for a few seconds, across re-renders of the list),
// the second deletes.
// Conversations this window is deleting: their `thread_deleted` comes back to it too.
const deletingHere = new Set<string>();
// A conversation was renamed or deleted (in this window, another, or another client): the
// list shows it; a window showing a conversation deleted elsewhere says so and starts a new one.
function threadChanged(change: SequencedThreadEvent): void {
  // A frame of the stream like an event: counted in the same order (window.chat.stats).
  if (state.lastSeq !== null && change.seq !== state.lastSeq + 1) stats.gaps += 1;
  state.lastSeq = change.seq;
  stats.events += 1;
  const id = change.thread_id;
  if (change.type === "thread_deleted" && !deletingHere.has(id) && state.thread === id) {
    state.thread = null;
    clearConversation();
    markCurrent();
    notice("This conversation was deleted in another window; a message now starts a new one.", "warn");
  }
  void refreshThreads();
}
async function deleteThread(id: string, button: HTMLElement): Promise<void> {
  if (state.armed !== id) {
    state.armed = id;
    button.dataset.armed = "1";
    button.textContent = "Delete?";
    setTimeout(() => {
      if (state.armed !== id) return;
      state.armed = null;
      const b = rowOf(id)?.querySelector<HTMLElement>(".delete");
      if (b) {
        delete b.dataset.armed;
        b.textContent = "Delete";
      }
    }, 4000);
    return;
  }
  state.armed = null;
  closeMenu(false);
  deletingHere.add(id);
  try {
    await api().deleteThread(id);
  } catch {
    notice("Could not delete that conversation; try again.", "error");
    rowOf(id)?.querySelector<HTMLElement>(".actions")?.focus();
    return;
  } finally {
    setTimeout(() => deletingHere.delete(id), 10_000);
  }
  if (state.thread === id) newConversation();
  await refreshThreads();
  // The focus was in the deleted row's menu: it goes to the list's first row (or its button).
  if (!document.activeElement || document.activeElement === document.body) {
    ($("threads").querySelector<HTMLElement>("li .open") ?? $("new-thread")).focus();
  }
}
function newConversation(): void {
  state.thread = null;
  clearConversation();
  markCurrent();
  closeSidebar();
  $("message").focus();
}
$("new-thread").addEventListener("click", newConversation);
function closeSidebar(): void {
  $("sidebar").classList.remove("open");
  $("sidebar-toggle").setAttribute("aria-expanded", "false");
}
$("sidebar-toggle").addEventListener("click", () => {
  const open = $("sidebar").classList.toggle("open");
  $("sidebar-toggle").setAttribute("aria-expanded", String(open));
  // On a narrow screen the list is a drawer over the page: its close button takes the focus.
  if (open) $("sidebar-close").focus();
});
// The drawer closes by its button, a tap beside it, or Escape; the focus goes back to its toggle.
function dismissSidebar(): void {
  if (!$("sidebar").classList.contains("open")) return;
  closeSidebar();
  $("sidebar-toggle").focus();
}
$("sidebar-close").addEventListener("click", dismissSidebar);
$("sidebar-backdrop").addEventListener("click", dismissSidebar);
document.addEventListener("keydown", (e) => {
  // Escape in a title being renamed only ends the renaming.
  const renaming = (e.target as HTMLElement | null)?.classList?.contains("rename-input");
  if (e.key === "Escape" && !renaming) dismissSidebar();
});

// ---- The conversation ---------------------------------------------------------------------

// Whether a run belongs in the view: with threads, only the open thread's runs show.
const belongs = (threadId?: string | null) => !state.history || !threadId || threadId === state.thread;
// Whether a run shown has not ended (running, or waiting for an approval or the budget).
const live = (run: PageRun) => run.el.dataset.state === "running" || run.el.dataset.state === "waiting";
// Empties the conversation (and the messages waiting their turn in it).
function clearConversation(): void {
  state.runs.clear();
  $("conversation").replaceChildren();
  $("queue").replaceChildren();
  multitaskHook("composer");
  showExamples();
}
// The conversation is a live region (role="log") that announces what is added; what `load`
// adds at once (a thread opened, earlier messages) is shown without being read out.
let loading = 0;
async function quietly<T>(load: () => Promise<T>): Promise<T> {
  const log = $("conversation");
  loading += 1;
  log.setAttribute("aria-live", "off");
  try {
    return await load();
  } finally {
    // Once the browser has taken the additions in.
    setTimeout(() => {
      loading -= 1;
      if (loading === 0) log.setAttribute("aria-live", "polite");
    }, 300);
  }
}
/** Asks the server to cancel a run; false (and says so) when not connected. */
function cancelRun(runId: string): boolean {
  const client = state.client;
  if (!client || client.state !== "open") {
    notice("Not connected right now: the page is reconnecting. Try again in a moment.", "warn");
    return false;
  }
  void client.cancel(runId);
  return true;
}

// A run's view, made on its first sign (its run_accepted, or its first event). A run accepted
// `queued` ({ position }) waits below the conversation until its agent_started (multitask.js).
function runView(
  runId: string,
  parentId: string | null | undefined,
  agent: string,
  message: string,
  threadId: string | null | undefined,
  queued?: { position: number | null } | null,
): Run | null {
  let run = state.runs.get(runId);
  if (run) return run;
  const parent = parentId ? state.runs.get(parentId) : undefined;
  if (parentId ? !parent : !belongs(threadId)) return null;
  const root = el(parentId ? "section" : "article", parentId ? "run sub" : "run");
  root.dataset.runId = runId;
  root.dataset.state = "running";
  const timeline = el("ol", "timeline");
  const subs = el("div", "subs");
  const answer = el("div", parentId ? "answer sub-answer" : "answer");
  const status = el("span", "run-state");
  run = { id: runId, el: root, status, timeline, subs, answer, text: "", title: null, seen: new Set(), steps: 0, agent };
  if (parent) run.parent = parent;
  if (threadId) run.threadId = threadId;
  if (parent) {
    run.title = el("div", "sub-head", `sub-run · ${agent}: ${message}`);
    root.append(run.title, timeline, subs, answer);
    parent.subs.append(root);
  } else {
    const view = run;
    const bubble = el("div", "bubble");
    view.userText = el("div", "text", message);
    view.userTime = el("time");
    bubble.append(view.userText, view.userTime);
    const reply = el("div", "reply");
    const head = el("div", "reply-head");
    view.agentTime = el("time");
    head.append(el("span", "agent-name", agent), view.agentTime, status);
    const stop = el("button", "secondary stop", "Stop");
    stop.type = "button";
    stop.addEventListener("click", () => cancelRun(runId));
    head.append(stop);
    view.details = el("details", "steps");
    view.details.open = true;
    const summary = el("summary", null, "Working…");
    view.summary = summary;
    summary.addEventListener("click", () => {
      view.toggled = true;
    });
    view.details.append(summary, timeline, subs);
    // The conversation reads out a message and its answer once, whole: not each step, nor
    // each piece of the answer as it comes.
    view.details.setAttribute("aria-live", "off");
    answer.setAttribute("aria-busy", "true");
    const typing = el("div", "typing");
    typing.setAttribute("role", "img");
    typing.setAttribute("aria-label", "The agent is answering");
    typing.append(el("span"), el("span"), el("span"));
    view.error = el("p", "run-error");
    reply.append(head, view.details, typing, answer, view.error);
    root.append(bubble, reply);
  }
  state.runs.set(runId, run);
  if (!parentId && !(queued && multitaskHook("queue", run, queued.position))) $("conversation").append(root);
  if (!parentId) showExamples();
  scrollToEnd(false);
  return run;
}

function row(run: Run, seq: number | string, kind: string, what: string | Node[], cls?: string): HTMLElement {
  const li = el("li", `row ${cls || ""}`);
  li.dataset.seq = String(seq);
  const w = el("span", "what");
  if (typeof what === "string") w.textContent = what;
  else w.append(...what);
  li.append(el("span", "kind", kind), w);
  run.timeline.append(li);
  const top = rootOf(run);
  top.steps += 1;
  if (top.summary && top.el.dataset.state === "running") top.summary.textContent = `Working… ${top.steps} step(s)`;
  return li;
}
function rootOf<R extends PageRun>(run: R): R {
  let r = run;
  while (r.parent) r = r.parent as R;
  return r;
}

function finish(run: Run, stateName: string, text: string): void {
  run.el.dataset.state = stateName;
  run.status.textContent = text;
  approvalHook("settle", run);
  if (run.parent) return;
  multitaskHook("settle", run);
  for (const a of run.el.querySelectorAll(".answer[aria-busy]")) a.removeAttribute("aria-busy");
  run.el.querySelector(".reply-head .stop")?.remove();
  if (run.summary) run.summary.textContent = `Steps (${run.steps})`;
  if (run.details) {
    run.details.hidden = run.steps === 0;
    if (!run.toggled) run.details.open = false;
  }
}

function onEvent(e: StreamEvent): void {
  if (typeof e.seq === "number") {
    // The client delivers each event once and in order: counted here again, for the tests.
    if (state.lastSeq !== null && e.seq <= state.lastSeq) {
      stats.duplicates += 1;
      return;
    }
    if (state.lastSeq !== null && e.seq !== state.lastSeq + 1) stats.gaps += 1;
    state.lastSeq = e.seq;
    stats.events += 1;
  }
  // A run of the user's ended (in any thread), or one waits for the budget: what it used
  // shows in the usage line.
  if ((!e.parent_run_id && TERMINAL.has(e.type)) || e.type === "budget_exhausted") usageHook("soon");
  if (state.parked) state.parked.push(e);
  else render(e, e.seq ?? "recovered");
}

const pendingPaint = new Set<Run>();
function paintAnswer(run: Run): void {
  if (pendingPaint.has(run)) return;
  pendingPaint.add(run);
  requestAnimationFrame(() => {
    if (!pendingPaint.delete(run)) return;
    renderMarkdown(run.answer, run.text);
    scrollToEnd(false);
  });
}
function scrollToEnd(always: boolean): void {
  const s = $("scroller");
  if (always || s.scrollHeight - s.scrollTop - s.clientHeight < 120) s.scrollTop = s.scrollHeight;
}

// Shows one event (live with its seq, `stored` from the history, or `recovered` by the client
// after a failed resume); an event already shown (the stored conversation and the live stream
// can overlap by a few events) is skipped.
function render(e: StreamEvent, seq: number | string): void {
  const d = (e.data ?? {}) as Data;
  approvalHook("track", e, seq);
  if (!e.parent_run_id && e.thread_id) awaitThread(e.thread_id);
  if (!e.parent_run_id && !belongs(e.thread_id)) return;
  const run = runView(e.run_id, e.parent_run_id, e.agent_name, d.message || "", e.thread_id);
  if (!run) return;
  const key = eventKey(e);
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
      else if (run.userText && run.userTime) {
        run.userText.textContent = d.message;
        const t = timeEl(at, clock(at));
        run.userTime.replaceWith(t);
        run.userTime = t;
      }
      break;
    case "agent_thinking":
      row(run, seq, "thinking", d.reasoning);
      break;
    case "tool_executing":
      row(run, seq, "tool", [el("span", null, d.tool_name), json(d.arguments)]);
      break;
    case "tool_completed":
      row(
        run,
        seq,
        d.is_error ? "tool failed" : "result",
        [el("span", null, `${d.tool_name} · ${d.duration_ms} ms`), json(d.result)],
        d.is_error ? "error" : "",
      );
      break;
    case "agent_response_chunk":
      run.text += d.delta;
      run.answer.dataset.seq = String(seq);
      paintAnswer(run);
      break;
    case "agent_completed": {
      if (!run.text && !run.earlier) {
        run.text = typeof d.result === "string" ? d.result : "```json\n" + JSON.stringify(d.result, null, 2) + "\n```";
      }
      // Painted now, not at the next frame: a finished run shows its whole answer.
      pendingPaint.delete(run);
      renderMarkdown(run.answer, run.text);
      finish(run, "completed", `answered in ${(d.duration_ms / 1000).toFixed(1)} s`);
      copyControls(run);
      if (run.agentTime) {
        const t = timeEl(at, clock(at));
        run.agentTime.replaceWith(t);
        run.agentTime = t;
      }
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
    case "approval_requested":
      approvalHook("show", run, e);
      break;
    case "approval_resolved":
      approvalHook("resolve", run, e);
      break;
    // A message sent while the run ran (multitask "steer"), taken here: shown as the user's
    // message at this point of the answer (multitask.js), or else as a step.
    case "message_received":
      if (!multitaskHook("received", run, d.message, at)) row(run, seq, "you added", d.message);
      break;
    // The run's next model call would pass the user's budget: it waits, holding nothing, and
    // goes on by itself when the budget allows. A notice where it paused, with Cancel (usage.js).
    case "budget_exhausted":
      if (!usageHook("paused", run, e)) {
        row(run, seq, "paused", "Your budget is used up: this run goes on by itself when it resets.");
      }
      break;
  }
  if (e.type === "tool_executing" || e.type === "tool_completed") approvalHook("followUp", run, e);
  if (!e.parent_run_id && LIFECYCLE.has(e.type)) multitaskHook("composer");
}
// A finished answer gets a Copy button (its markdown as written), and each of its code blocks one.
function copyControls(run: Run): void {
  if (run.parent) return;
  copyCodeButtons(run.el);
  const whole = () => (run.earlier || "") + run.text;
  if (!whole().trim() || run.el.querySelector(".reply-actions")) return;
  const bar = el("div", "reply-actions");
  bar.append(copyButton("the answer", whole));
  if (run.error) run.error.before(bar);
  else run.answer.after(bar);
}
const TERMINAL = new Set(["agent_completed", "agent_error", "agent_cancelled"]);
// The events after which a thread may have become busy or free (the composer says which).
const LIFECYCLE = new Set([
  "agent_started",
  "agent_completed",
  "agent_error",
  "agent_cancelled",
  "approval_requested",
  "approval_resolved",
  "budget_exhausted",
]);
// What a cancelled run's state says, by who ended it (and whether it had begun).
function cancelledText(run: Run, reason: string): string {
  if (run.cancelledWhileQueued && run.steps === 0 && !run.text && !run.earlier) return "cancelled before it started";
  if (reason === "interrupted") return "interrupted by your newer message";
  if (reason === "rolled_back") return "rolled back";
  return "stopped";
}

// ---- Sending ------------------------------------------------------------------------------

/** Whether the page's connection is open now. */
const connected = () => state.client?.state === "open";
const NOT_CONNECTED =
  "Not connected right now: the page is reconnecting. Your message is still here; send it again in a moment.";
/** Sends a frame as it is (approvals.js); false when not connected. */
function send(frame: ClientFrame): boolean {
  const client = state.client;
  if (!client || !connected()) {
    composerNotice(NOT_CONNECTED);
    return false;
  }
  void client.send(frame);
  return true;
}
// Sends the composer's message (or `example`, an example prompt pressed); `multitask` says
// what it does to a run still going in the thread ("interrupt", "steer"), or null for the
// server's default (it waits its turn).
async function sendMessage(multitask?: string | null, example?: string): Promise<void> {
  const message = example ?? input("message").value;
  if (!message.trim()) {
    composerNotice("Type a message first.");
    $("message").focus();
    return;
  }
  let options: Data | undefined;
  const raw = input("input").value.trim();
  if (raw) {
    try {
      options = JSON.parse(raw) as Data;
    } catch {
      composerNotice('The agent options (under Advanced) must be a JSON object, like {"tools":3}.');
      return;
    }
  }
  const client = state.client;
  if (!client || !connected()) {
    if (example !== undefined && !input("message").value) input("message").value = example;
    composerNotice(NOT_CONNECTED);
    return;
  }
  composerNotice("");
  const agent = input("agent").value;
  const threadId = state.thread;
  try {
    const run = await client.run({
      agent,
      message,
      ...(options ? { input: options } : {}),
      ...(threadId ? { threadId } : {}),
      ...(multitask && threadId ? { multitask: multitask as Multitask } : {}),
    });
    // The page follows every run through the user's whole stream, not the handle's.
    void run.events.return?.();
    if (state.client !== client) return;
    state.thread = run.threadId;
    if (example === undefined && input("message").value === message) input("message").value = "";
    composerNotice("");
    // A steered message joined the running run (its id is that run's); a queued one waits for
    // its turn (its agent_started comes later).
    if (run.steered) multitaskHook("steered", run.runId, message);
    else runView(run.runId, null, agent, message, run.threadId, run.queued ? { position: run.position ?? null } : null);
    multitaskHook("composer");
    void refreshThreads();
    // The example pressed is gone with the others: the focus goes to the composer.
    if (example !== undefined) $("message").focus();
  } catch (err) {
    if (state.client !== client) return;
    // An example refused waits in the composer, like a message typed.
    if (example !== undefined && !input("message").value) input("message").value = example;
    // A refusal of what was just sent shows next to the composer, where the text stays:
    // nothing typed is lost.
    const f: Refusal =
      err instanceof AgentClientError
        ? { type: "error", ...err.details, code: err.code, message: err.message }
        : { type: "error", code: "internal_error", message: String(err) };
    if (f.code === "connection_lost") composerNotice(`${NOT_CONNECTED} (${f.message})`);
    else composerNotice(plain(f), BUSY.has(f.code) ? "busy" : f.code === "budget_exceeded" ? "budget" : null);
    // The page never asks for `reject`: this server refuses by default what the page queues.
    if (f.code === "thread_busy") {
      state.defaultRejects = true;
      multitaskHook("composer");
    }
    $("message").focus();
  }
}
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  void sendMessage(null);
});
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ($("composer") as HTMLFormElement).requestSubmit();
  }
});

// What the other page modules (approvals, multitask, usage) use of this one: globals of the
// page, as globals.d.ts declares them.
// The HTTP API for the other modules, with the token of now (their bundles need no HTTP code).
const pageHttp = new HttpApi(new URL(location.origin), async () => state.token ?? "", (input, init) =>
  fetch(input, init),
);
Object.assign(window, {
  pageHttp,
  state,
  live,
  sendMessage,
  notice,
  json,
  send,
  connected,
  dayAndTime,
  $,
  el,
  timeEl,
  clock,
  renderMarkdown,
  cancelRun,
  scrollToEnd,
  multitaskHook,
  pendingPaint,
  rootOf,
});

// A reload keeps the session (the token lives in this tab's session storage, never in the URL).
void (async () => {
  type Saved = { token?: string; devUser?: string | null } | null;
  let saved: Saved;
  try {
    saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null") as Saved;
  } catch {
    saved = null;
  }
  if (!saved || !saved.token) return;
  const who = await whoAmI(saved.token);
  if (who.user) {
    await signIn(saved.token, saved.devUser || null);
    return;
  }
  if (who.refused && saved.devUser) {
    const got = await devToken(saved.devUser).catch(() => ({ token: undefined }));
    if (got.token) {
      await signIn(got.token, saved.devUser);
      return;
    }
  }
  sessionStorage.removeItem(SESSION_KEY);
  showSignIn(who.refused ? `Your session is no longer valid (${who.refused}). Sign in again.` : "");
})();
