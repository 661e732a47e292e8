// Intake web inbox: the list, live updates, search, the URL, keys (message.js: one message;
// selection.js: changes to many; tags.js: tags). Plain JS (ES2020), no dependencies, no build step, no
// inline script or style (the page's CSP forbids both). Message content only ever reaches
// the page through textContent and attributes set from JS; HTML mail is shown in an iframe
// sandboxed without scripts, served by /api/v1/messages/{id}/html with its own strict CSP.
//
// URL: #/<mailbox> opens a mailbox, #all opens all mail, #search/<query> shows search
// results, and /<id> after any of them opens a message (#/bob@example.com/0190…).
// ?mailbox=<address> is accepted too. Without any, the start page: the latest mail when
// this client may read all mail, else a short explanation and the mailbox box.
"use strict";

const PER_PAGE = 50;
const $ = (id) => document.getElementById(id);
const api = (path) => "/api/v1" + path;
const mailboxPath = (name) => api("/mailboxes/" + encodeURIComponent(name));
const messagePath = (id) => api("/messages/" + encodeURIComponent(id));

const state = {
  mailbox: null,    // null: none open; "": all mail; else the address as typed
  query: null,      // a search's text (then mailbox is null)
  home: false,      // the start page's latest mail (all mail, shown at /)
  selected: new Set(), // ids picked for a batch action
  messages: [],     // MessageSummary, newest first
  total: 0,
  unread: 0,
  currentId: null,  // the list's selection
  openId: null,     // the message shown
  gen: 0,           // bumped when the mailbox changes; stale responses are dropped
  loading: 0,       // page-1 loads in flight: events are queued meanwhile
  queue: [],
  source: null,
  retries: 0,
  retryTimer: 0,
  reloadTimer: 0,
  imagesShown: false,
  // What this client may do (GET /api/v1/access); the page hides the rest.
  access: { all_mail: true, delete: true },
};

// ---- small helpers --------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

async function request(path, opts) {
  const r = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, opts));
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try {
      const body = await r.json();
      if (body && body.error && body.error.message) msg = body.error.message;
    } catch (_) { /* not JSON */ }
    if (r.status === 429) msg = "Too many requests, try again in " + (r.headers.get("Retry-After") || "a few") + " s";
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  return type.includes("json") ? r.json() : r.text();
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg || "";
  e.hidden = !msg;
}

const fmtClock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fmtDay = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const fmtDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const fmtFull = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

function relative(d) {
  const secs = Math.round((Date.now() - d.getTime()) / 1000);
  if (secs < 45) return "just now";
  if (secs < 3600) return Math.round(secs / 60) + " min ago";
  if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
  if (secs < 86400 * 30) return Math.floor(secs / 86400) + " d ago";
  return "";
}

function absolute(d) {
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return fmtClock.format(d);
  if (d.getFullYear() === now.getFullYear()) return fmtDay.format(d) + ", " + fmtClock.format(d);
  return fmtDate.format(d);
}

function when(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso || "");
  const rel = relative(d);
  return rel ? rel + " \u00b7 " + absolute(d) : absolute(d);
}

function size(n) {
  if (typeof n !== "number") return "";
  return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB";
}

// The live indicator; hidden (null) where nothing is watched, such as the start page.
function setStatus(kind) {
  const s = $("status");
  s.hidden = !kind;
  if (!kind) return;
  const text = { live: "live", connecting: "connecting\u2026", reconnecting: "reconnecting\u2026", offline: "offline" }[kind];
  s.textContent = text;
  s.title = "Live updates: " + text;
  s.className = "status " + kind;
}

// ---- URL ------------------------------------------------------------------------------

function encodeName(name) {
  return encodeURIComponent(name).replace(/%40/g, "@");
}

function hashFor(mailbox, id, query) {
  let base;
  if (query !== null && query !== undefined) base = "#search/" + encodeURIComponent(query);
  else if (mailbox === null) return "";
  else base = mailbox === "" ? "#all" : "#/" + encodeName(mailbox);
  return id ? base + "/" + encodeURIComponent(id) : base;
}

function parseHash() {
  const h = location.hash;
  let m = /^#all(?:\/([^/]+))?$/.exec(h);
  if (m) return { mailbox: "", id: m[1] ? decodeURIComponent(m[1]) : null };
  m = /^#search\/([^/]*)(?:\/([^/]+))?$/.exec(h);
  if (m) {
    try {
      return { mailbox: null, query: decodeURIComponent(m[1]), id: m[2] ? decodeURIComponent(m[2]) : null };
    } catch (_) { return { mailbox: null, id: null }; }
  }
  m = /^#\/([^/]+)(?:\/([^/]+))?$/.exec(h);
  if (m) {
    try {
      return { mailbox: decodeURIComponent(m[1]), id: m[2] ? decodeURIComponent(m[2]) : null };
    } catch (_) { return { mailbox: null, id: null }; }
  }
  return { mailbox: null, id: null };
}

// Opening/closing a message replaces the history entry; changing mailbox adds one.
function syncHash() {
  const h = state.home && !state.openId ? "" : hashFor(state.mailbox, state.openId, state.query);
  if (location.hash !== h) history.replaceState(null, "", h || location.pathname);
}

// ---- the list -------------------------------------------------------------------------

function rowId(id) { return "msg-" + id; }

function row(m) {
  const li = el("li", "msg" + (m.seen ? "" : " unread"));
  li.id = rowId(m.id);
  li.dataset.id = m.id;
  li.setAttribute("role", "option");
  li.setAttribute("aria-selected", String(m.id === state.currentId));
  if (m.id === state.currentId) li.classList.add("current");
  if (m.id === state.openId) li.classList.add("open");
  const pick = el("input", "pick");
  pick.type = "checkbox";
  pick.checked = state.selected.has(m.id);
  pick.tabIndex = -1;
  pick.setAttribute("aria-label", "Select " + (m.subject || "(no subject)"));
  if (pick.checked) li.classList.add("picked");
  const from = el("span", "from");
  if (!m.seen) from.append(el("span", "visually-hidden", "Unread. "));
  from.append(document.createTextNode(m.from || m.mail_from || "<>"));
  const t = el("time", "when", when(m.received_at));
  t.dateTime = m.received_at;
  t.title = fmtFull.format(new Date(m.received_at));
  const subject = el("span", "subject", m.subject || "(no subject)");
  const files = m.attachments ? m.attachments + (m.attachments === 1 ? " attachment" : " attachments") : "";
  // Across mailboxes (all mail, the start page, search), say whose mail it is.
  const whose = state.mailbox ? "" : (m.rcpt_to || []).join(", ");
  const info = el("span", "info", size(m.size) + (files ? " \u00b7 " + files : ""));
  if (whose) info.prepend("to " + whose + " \u00b7 ");
  li.append(pick, from, t, subject, info);
  if (m.tags && m.tags.length) li.append(tagChips(m.tags)); // tags.js
  return li;
}

function render() {
  const list = $("message-list");
  list.replaceChildren(...state.messages.map(row));
  if (state.currentId && state.messages.some((m) => m.id === state.currentId)) {
    list.setAttribute("aria-activedescendant", rowId(state.currentId));
  } else {
    list.removeAttribute("aria-activedescendant");
  }
  const open = state.mailbox !== null || state.query !== null;
  const empty = $("empty");
  empty.hidden = state.messages.length > 0 || !open;
  empty.textContent = state.query !== null
    ? "Nothing matches this search."
    : "No mail yet. New mail appears here by itself.";
  $("intro").hidden = open;
  if (!open) {
    $("counts").textContent = "";
  } else {
    const noun = state.query !== null ? (state.total === 1 ? " result" : " results") : (state.total === 1 ? " message" : " messages");
    $("counts").textContent = state.total + noun + " \u00b7 " + state.unread + " unread";
  }
  $("more").hidden = !open || state.messages.length >= state.total;
  renderSelection();
  const name = state.query !== null ? "Search: " + state.query
    : state.mailbox === null ? "" : state.mailbox === "" ? (state.home ? "" : "All mail") : state.mailbox;
  document.title = (state.unread > 0 ? "(" + state.unread + ") " : "") + (name ? name + " \u00b7 " : "") + "Intake";
}

function refreshTimes() {
  document.querySelectorAll("#message-list time").forEach((t) => { t.textContent = when(t.dateTime); });
}

function listPath(page, perPage) {
  const q = "?page=" + page + "&per_page=" + perPage;
  if (state.query !== null) return api("/search" + q + "&query=" + encodeURIComponent(state.query));
  return state.mailbox === "" ? api("/messages" + q) : mailboxPath(state.mailbox) + "/messages" + q;
}

// Loads the first page (or, with `keep`, as many messages as are shown, up to 500) and
// replays the events that arrived meanwhile, so nothing is lost between the two.
async function load(keep) {
  const gen = state.gen;
  const perPage = keep ? Math.min(500, Math.max(PER_PAGE, Math.ceil(state.messages.length / PER_PAGE) * PER_PAGE)) : PER_PAGE;
  state.loading += 1;
  try {
    const data = await request(listPath(1, perPage));
    if (gen !== state.gen) return;
    state.messages = data.messages;
    state.total = data.total;
    state.unread = data.unread;
    if (state.mailbox) {
      $("list-title").textContent = data.mailbox || state.mailbox;
      showAlias(data.alias);
    }
    showError("");
  } catch (e) {
    if (gen === state.gen) showError((state.query !== null ? "Could not search: " : "Could not load the list: ") + e.message);
  } finally {
    if (gen === state.gen) {
      state.loading -= 1;
      if (state.loading === 0) {
        const queued = state.queue;
        state.queue = [];
        queued.forEach(([type, data]) => apply(type, data));
      }
      render();
    }
  }
}

async function loadMore() {
  const gen = state.gen;
  // New mail shifts pages down; duplicates are dropped, so asking by count is safe.
  const page = Math.floor(state.messages.length / PER_PAGE) + 1;
  try {
    const data = await request(listPath(page, PER_PAGE));
    if (gen !== state.gen) return;
    const have = new Set(state.messages.map((m) => m.id));
    state.messages = state.messages.concat(data.messages.filter((m) => !have.has(m.id)));
    state.total = data.total;
    state.unread = data.unread;
    render();
  } catch (e) {
    showError("Could not load more: " + e.message);
  }
}

async function showAlias(alias) {
  const box = $("alias-box");
  if (!state.mailbox) { box.hidden = true; return; }
  if (!alias) {
    const gen = state.gen;
    try {
      alias = (await request(mailboxPath(state.mailbox) + "/alias")).alias;
    } catch (_) { alias = null; }
    if (gen !== state.gen) return;
  }
  $("alias").textContent = alias || "";
  box.hidden = !alias;
}

function removeLocal(id) {
  const gone = state.messages.find((m) => m.id === id);
  if (!gone) return false;
  const i = state.messages.indexOf(gone);
  state.messages.splice(i, 1);
  state.selected.delete(id);
  state.total = Math.max(0, state.total - 1);
  if (!gone.seen) state.unread = Math.max(0, state.unread - 1);
  if (state.currentId === id) {
    const next = state.messages[Math.min(i, state.messages.length - 1)];
    state.currentId = next ? next.id : null;
  }
  return true;
}

// ---- live updates ---------------------------------------------------------------------

function apply(type, data) {
  if (state.query !== null) {
    // Whether new mail matches is the server's to say; a deleted message just goes.
    if (type === "new") scheduleReload();
    else if (removeLocal(data.id) && state.openId === data.id) closeMessage(false);
    return;
  }
  if (type === "new") {
    const m = data.message;
    if (!m || state.messages.some((x) => x.id === m.id)) return;
    state.messages.unshift(m);
    state.total += 1;
    if (!m.seen) state.unread += 1;
  } else if (type === "deleted") {
    if (state.mailbox === "") {
      // In all mail, `deleted` may only mean "no longer in that mailbox" (the message can
      // still be filed elsewhere): ask the server instead of guessing.
      scheduleReload();
      return;
    }
    removeLocal(data.id);
    if (state.openId === data.id) closeMessage(false);
  }
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(() => load(true), 300);
}

function onEvent(type, ev) {
  let data;
  try { data = JSON.parse(ev.data); } catch (_) { return; }
  if (state.loading > 0) { state.queue.push([type, data]); return; }
  apply(type, data);
  render();
}

function closeSource() {
  clearTimeout(state.retryTimer);
  if (state.source) state.source.close();
  state.source = null;
}

function subscribe() {
  closeSource();
  // The mailbox whose mail can change what is shown ("" for all mail), or none.
  let watch = state.mailbox;
  if (state.query !== null) {
    const m = /(?:^|\s)mailbox:("[^"]+"|\S+)/i.exec(state.query);
    watch = m ? m[1].replace(/"/g, "") : state.access.all_mail ? "" : null;
  }
  if (watch === null) { setStatus(null); return; }
  const gen = state.gen;
  const url = api("/events") + (watch ? "?mailbox=" + encodeURIComponent(watch) : "");
  const es = new EventSource(url);
  state.source = es;
  let opened = false;
  setStatus(state.retries ? "reconnecting" : "connecting");
  es.addEventListener("open", () => {
    setStatus("live");
    // After a reconnection events may have been missed: re-read the list.
    if (opened || state.retries > 0) load(true);
    opened = true;
    state.retries = 0;
  });
  es.addEventListener("error", () => {
    if (gen !== state.gen || state.source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. a 429): retry ourselves, backing off up to 30 s.
      setStatus("offline");
      es.close();
      state.retries += 1;
      state.retryTimer = setTimeout(() => { if (gen === state.gen) subscribe(); }, Math.min(30000, 1000 * 2 ** state.retries));
    } else {
      setStatus("reconnecting");
      state.retries = Math.max(state.retries, 1);
    }
  });
  es.addEventListener("new", (ev) => onEvent("new", ev));
  es.addEventListener("deleted", (ev) => onEvent("deleted", ev));
  es.addEventListener("lagged", () => load(true));
}

// ---- mailbox --------------------------------------------------------------------------

// Shows a mailbox (name), all mail (""), a search (query) or the start page (neither).
function openMailbox(name, id, query) {
  if (query === undefined) query = null;
  let error = "";
  if (name === "" && !state.access.all_mail) {
    // All mail needs a credential on this server: stay on the start page.
    error = "All mail is not open to you on this server; type a mailbox address.";
    history.replaceState(null, "", location.pathname);
    name = null;
    id = null;
  }
  const home = name === null && query === null && state.access.all_mail;
  if (home) name = "";
  const same = name === state.mailbox && query === state.query && home === state.home;
  if (!same) {
    state.gen += 1;
    state.mailbox = name;
    state.query = query;
    state.home = home;
    state.selected.clear();
    state.messages = [];
    state.total = 0;
    state.unread = 0;
    state.currentId = null;
    state.loading = 0;
    state.queue = [];
    state.retries = 0;
    $("alias-box").hidden = true;
    $("list-title").textContent = query !== null ? "Search" : home ? "Latest mail"
      : name === null ? "Read a mailbox" : name === "" ? "All mail" : name;
    $("mailbox-input").value = name || "";
    $("search-input").value = query || "";
    showError(error);
    if (state.openId) closeMessage(false);
    render();
    if (name !== null || query !== null) {
      subscribe();
      load(false);
    } else {
      closeSource();
      setStatus(null);
    }
  } else if (error) {
    showError(error);
  }
  if (id && id !== state.openId) openMessage(id);
  else if (!id && state.openId) closeMessage(false);
}

// A search gets its own history entry. Searching from a mailbox searches that mailbox
// (the filter is put in the box, where it can be removed).
function goSearch(text) {
  let q = text.trim();
  if (!q) return;
  if (state.mailbox && state.query === null && !/(?:^|\s)mailbox:/i.test(q)) {
    q = "mailbox:" + state.mailbox + " " + q;
  }
  if (!state.access.all_mail && !/(?:^|\s)mailbox:/i.test(q)) {
    showError("Searching all mail is not open to you on this server: add mailbox:<address> to the search.");
    return;
  }
  const h = hashFor(null, null, q);
  if (location.hash !== h) location.hash = h;
  else load(true);
}

// A new mailbox gets its own history entry (back returns to the previous one).
function goMailbox(name) {
  const h = hashFor(name, null);
  if (location.hash !== h) location.hash = h;
  else if (state.openId) closeMessage(true);
  else load(true);
}

async function deleteMailbox() {
  if (!state.mailbox || !state.access.delete) return;
  const n = state.total;
  const what = n === 1 ? "the 1 message" : n > 1 ? "all " + n + " messages" : "every message";
  if (!confirm("Delete " + what + " of " + state.mailbox + "? This cannot be undone.")) return;
  const gen = state.gen;
  try {
    await request(mailboxPath(state.mailbox), { method: "DELETE" });
  } catch (e) {
    showError("Could not delete the mailbox: " + e.message);
    return;
  }
  if (gen !== state.gen) return;
  if (state.openId) closeMessage(true);
  load(false);
}

async function copyAlias() {
  const text = $("alias").textContent;
  const button = $("copy-alias");
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      // A browser may leave the promise pending (permission prompt): give it a second.
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1000));
      await Promise.race([navigator.clipboard.writeText(text), timeout]);
      ok = true;
    }
  } catch (_) { /* fall back below */ }
  if (!ok) {
    // Not a secure context (plain http on a LAN address): select it and copy.
    const range = document.createRange();
    range.selectNodeContents($("alias"));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
  }
  button.textContent = ok ? "Copied" : "Press Ctrl+C";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function move(delta) {
  if (state.messages.length === 0) return;
  const i = state.messages.findIndex((m) => m.id === state.currentId);
  const next = i < 0 ? (delta > 0 ? 0 : state.messages.length - 1) : Math.max(0, Math.min(state.messages.length - 1, i + delta));
  state.currentId = state.messages[next].id;
  if (state.openId) { openMessage(state.currentId); return; }
  render();
  const li = $(rowId(state.currentId));
  if (li) li.scrollIntoView({ block: "nearest" });
}

// ---- wiring ---------------------------------------------------------------------------

function onKey(e) {
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement) {
    if (e.key === "Escape") t.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
  const onControl = t instanceof HTMLButtonElement || t instanceof HTMLAnchorElement;
  if (onControl && (e.key === "Enter" || e.key === " ")) return;
  if (t.getAttribute && t.getAttribute("role") === "tab" && (e.key === "ArrowLeft" || e.key === "ArrowRight")) {
    const tabs = Array.from(document.querySelectorAll(".tabs [role=tab]"));
    const i = tabs.indexOf(t) + (e.key === "ArrowRight" ? 1 : -1);
    selectTab(tabs[(i + tabs.length) % tabs.length].dataset.tab, true);
    e.preventDefault();
    return;
  }
  switch (e.key) {
    case "/": $("mailbox-input").focus(); $("mailbox-input").select(); break;
    case "j": move(1); break;
    case "k": move(-1); break;
    case "ArrowDown": case "ArrowUp":
      if (t !== $("message-list")) return; // elsewhere the arrows scroll
      move(e.key === "ArrowDown" ? 1 : -1);
      break;
    case "o": case "Enter": if (state.currentId) openMessage(state.currentId); break;
    case "#": case "Delete": deleteMessage(); break;
    case "r": if (state.mailbox !== null || state.query !== null) load(true); break;
    case "s": $("search-input").focus(); $("search-input").select(); break;
    case "x": if (state.currentId) toggleSelected(state.currentId); break;
    case "u": if (state.openId) markUnread(); break;
    case "t": if (state.openId) $("tag-input").focus(); break;
    case "Escape": if (state.openId) closeMessage(true); break;
    default: return;
  }
  e.preventDefault();
}

function onHash() {
  let { mailbox, id, query } = parseHash();
  if (mailbox === null && !location.hash) {
    const q = new URLSearchParams(location.search).get("mailbox");
    if (q !== null) {
      mailbox = q.trim() === "*" ? "" : q.trim();
      history.replaceState(null, "", location.pathname + hashFor(mailbox, null));
    }
  }
  openMailbox(mailbox, id, query === undefined ? null : query);
}

document.addEventListener("DOMContentLoaded", () => {
  $("mailbox-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("mailbox-input").value.trim();
    if (name) goMailbox(name);
  });
  $("intro-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("intro-input").value.trim();
    if (name) goMailbox(name);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    goSearch($("search-input").value);
  });
  $("html-frame").addEventListener("load", fitFrame);
  let resizing = 0;
  window.addEventListener("resize", () => { cancelAnimationFrame(resizing); resizing = requestAnimationFrame(fitFrame); });
  $("all-mail").addEventListener("click", () => goMailbox(""));
  $("home").addEventListener("click", (e) => { e.preventDefault(); history.pushState(null, "", location.pathname); openMailbox(null, null); });
  $("more").addEventListener("click", loadMore);
  $("back").addEventListener("click", () => closeMessage(true));
  $("delete-message").addEventListener("click", deleteMessage);
  $("show-images").addEventListener("click", () => {
    if (!state.openId) return;
    state.imagesShown = true;
    setFrame(state.openId, true);
    $("show-images").disabled = true;
    $("images-note").textContent = "Remote images are shown (the sender can see you opened this).";
  });
  $("copy-alias").addEventListener("click", copyAlias);
  $("delete-mailbox").addEventListener("click", deleteMailbox);
  document.querySelectorAll(".tabs [role=tab]").forEach((b) => b.addEventListener("click", () => selectTab(b.dataset.tab, false)));
  $("message-list").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-id]");
    if (!li) return;
    if (e.target.classList.contains("pick")) { toggleSelected(li.dataset.id, e.target.checked); return; }
    state.currentId = li.dataset.id;
    openMessage(li.dataset.id);
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", onHash);
  setInterval(refreshTimes, 30000);
  loadAccess().finally(() => {
    onHash();
    render();
  });
});

// Asks what this client may do and hides what it may not (All mail, deletes).
async function loadAccess() {
  try {
    const a = await request(api("/access"));
    state.access = { all_mail: !!a.all_mail, delete: !!a.delete, mode: a.mode };
  } catch (_) { /* an older server: everything shown, the API still decides */ }
  $("all-mail").hidden = !state.access.all_mail;
  $("delete-message").hidden = !state.access.delete;
  $("delete-mailbox").hidden = !state.access.delete;
  document.body.dataset.access = state.access.all_mail ? "all" : "mailbox";
  document.body.dataset.mode = state.access.mode || "";
}
