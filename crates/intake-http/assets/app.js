// Intake web inbox. Plain JS, no dependencies. Message content is only ever set with
// textContent; HTML mail is shown in a sandboxed iframe served with its own strict CSP.
"use strict";

const $ = (id) => document.getElementById(id);
const api = (path) => "/api/v1" + path;
const state = { mailbox: null, messages: [], page: 1, total: 0, unread: 0, current: -1, openId: null, source: null };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

async function getJSON(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.status === 204 ? null : r.json();
}

function when(iso) {
  const d = new Date(iso);
  const secs = Math.round((Date.now() - d.getTime()) / 1000);
  if (secs < 60) return "just now";
  if (secs < 3600) return Math.floor(secs / 60) + " min ago";
  if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
  return d.toLocaleDateString();
}

function size(n) {
  return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB";
}

function setStatus(text, live) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("live", !!live);
}

function row(m) {
  const li = el("li", m.seen ? "" : "unread");
  li.dataset.id = m.id;
  li.setAttribute("role", "option");
  li.append(el("span", "from", m.from || m.mail_from || "<>"), el("span", "when", when(m.received_at)));
  const subj = el("span", "subject", m.subject || "(no subject)");
  const info = el("span", "when", size(m.size) + (m.attachments ? " \u00b7 \u{1F4CE}" + m.attachments : ""));
  li.append(subj, info);
  li.title = new Date(m.received_at).toString();
  li.addEventListener("click", () => openMessage(m.id));
  return li;
}

function render() {
  const list = $("message-list");
  list.replaceChildren();
  if (state.messages.length === 0) {
    list.append(el("li", "empty", state.mailbox === null ? "Open a mailbox to see its mail." : "No mail yet. New mail appears here by itself."));
  }
  state.messages.forEach((m, i) => {
    const li = row(m);
    if (i === state.current) li.classList.add("current");
    list.append(li);
  });
  const plural = state.total === 1 ? " message" : " messages";
  $("counts").textContent = state.mailbox === null ? "" : state.total + plural + " \u00b7 " + state.unread + " unread";
  $("more").hidden = state.messages.length >= state.total;
}

function listPath(page) {
  const q = "?per_page=50&page=" + page;
  return state.mailbox === "" ? api("/messages" + q) : api("/mailboxes/" + encodeURIComponent(state.mailbox) + "/messages" + q);
}

async function load(page) {
  try {
    const data = await getJSON(listPath(page));
    state.page = page;
    state.total = data.total;
    state.unread = data.unread;
    state.messages = page === 1 ? data.messages : state.messages.concat(data.messages);
    if (data.alias) {
      $("alias").textContent = data.alias;
      $("alias-box").hidden = false;
    } else {
      $("alias-box").hidden = true;
    }
    render();
  } catch (e) {
    $("counts").textContent = "Could not load: " + e.message;
  }
}

function subscribe() {
  if (state.source) state.source.close();
  const url = api("/events") + (state.mailbox ? "?mailbox=" + encodeURIComponent(state.mailbox) : "");
  const es = new EventSource(url);
  state.source = es;
  setStatus("connecting", false);
  es.onopen = () => setStatus("live", true);
  es.onerror = () => setStatus("reconnecting", false);
  es.addEventListener("new", (ev) => {
    const data = JSON.parse(ev.data);
    if (state.messages.some((m) => m.id === data.message.id)) return;
    state.messages.unshift(data.message);
    state.total += 1;
    if (!data.message.seen) state.unread += 1;
    if (state.current >= 0) state.current += 1;
    render();
  });
  es.addEventListener("deleted", (ev) => {
    const data = JSON.parse(ev.data);
    const gone = state.messages.find((m) => m.id === data.id);
    state.messages = state.messages.filter((m) => m.id !== data.id);
    if (gone) { state.total -= 1; if (!gone.seen) state.unread -= 1; }
    render();
    if (state.openId === data.id) closeMessage();
  });
  es.addEventListener("lagged", () => load(1));
}

function openMailbox(name) {
  state.mailbox = name;
  state.messages = [];
  state.current = -1;
  $("list-title").textContent = name === "" ? "All mail" : name;
  $("mailbox-input").value = name;
  const hash = name === "" ? "#/all" : "#/" + encodeURIComponent(name);
  if (location.hash !== hash) history.replaceState(null, "", hash);
  closeMessage();
  load(1);
  subscribe();
}

function selectTab(name) {
  document.querySelectorAll(".tabs [role=tab]").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.tab === name)));
  document.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== name; });
  if (name === "raw" && state.openId && !$("view-raw").dataset.loaded) {
    fetch(api("/messages/" + state.openId + "/raw")).then((r) => r.text()).then((t) => {
      $("view-raw").textContent = t;
      $("view-raw").dataset.loaded = "1";
    });
  }
}

async function openMessage(id) {
  let m;
  try {
    m = await getJSON(api("/messages/" + id));
  } catch (e) {
    $("counts").textContent = "Could not open: " + e.message;
    return;
  }
  state.openId = id;
  state.current = state.messages.findIndex((x) => x.id === id);
  document.body.classList.add("viewing");
  $("message-view").hidden = false;
  $("view-subject").textContent = m.subject || "(no subject)";
  const meta = $("view-meta");
  meta.replaceChildren();
  const add = (k, v) => { if (v) meta.append(el("dt", null, k), el("dd", null, v)); };
  add("From", m.from || m.mail_from);
  add("To", m.to || m.rcpt_to.join(", "));
  add("Cc", m.cc);
  add("Envelope", (m.mail_from || "<>") + " \u2192 " + m.rcpt_to.join(", "));
  add("Received", new Date(m.received_at).toString());
  add("Size", size(m.size));
  $("download-raw").href = api("/messages/" + id + "/raw");
  $("html-frame").src = api("/messages/" + id + "/html");
  $("view-text").textContent = m.text || "(no text body)";
  const headers = $("view-headers");
  headers.replaceChildren();
  m.headers.forEach((h) => {
    const tr = el("tr");
    tr.append(el("td", null, h.name), el("td", null, h.value));
    headers.append(tr);
  });
  $("view-raw").textContent = "";
  delete $("view-raw").dataset.loaded;
  const atts = $("view-attachments");
  atts.replaceChildren();
  if (m.attachment_list.length === 0) atts.append(el("li", null, "No attachments."));
  m.attachment_list.forEach((a) => {
    const li = el("li");
    const link = el("a", null, (a.name || "attachment " + a.part) + " (" + a.content_type + ", " + size(a.size) + ")");
    link.href = api("/messages/" + id + "/attachments/" + a.part);
    link.setAttribute("download", a.name || "");
    li.append(link);
    atts.append(li);
  });
  selectTab(m.html ? "html" : "text");
  render();
  if (!m.seen) {
    fetch(api("/messages/" + id + "/read"), { method: "POST" }).then(() => {
      const s = state.messages.find((x) => x.id === id);
      if (s && !s.seen) { s.seen = true; state.unread = Math.max(0, state.unread - 1); render(); }
    });
  }
}

function closeMessage() {
  state.openId = null;
  document.body.classList.remove("viewing");
  $("message-view").hidden = true;
  $("html-frame").src = "about:blank";
}

async function deleteMessage() {
  const id = state.openId || (state.messages[state.current] || {}).id;
  if (!id) return;
  try {
    await getJSON(api("/messages/" + id), { method: "DELETE" });
  } catch (e) {
    $("counts").textContent = "Could not delete: " + e.message;
    return;
  }
  const gone = state.messages.find((m) => m.id === id);
  state.messages = state.messages.filter((m) => m.id !== id);
  if (gone) { state.total -= 1; if (!gone.seen) state.unread -= 1; }
  closeMessage();
  state.current = Math.min(state.current, state.messages.length - 1);
  render();
}

function move(delta) {
  if (state.messages.length === 0) return;
  state.current = Math.max(0, Math.min(state.messages.length - 1, state.current + delta));
  render();
  const li = $("message-list").children[state.current];
  if (li) li.scrollIntoView({ block: "nearest" });
}

function fromHash() {
  const h = location.hash.replace(/^#\/?/, "");
  if (h === "all") openMailbox("");
  else if (h) openMailbox(decodeURIComponent(h));
}

document.addEventListener("DOMContentLoaded", () => {
  $("mailbox-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("mailbox-input").value.trim();
    if (name) openMailbox(name);
  });
  $("all-mail").addEventListener("click", () => openMailbox(""));
  $("more").addEventListener("click", () => load(state.page + 1));
  $("back").addEventListener("click", closeMessage);
  $("delete-message").addEventListener("click", deleteMessage);
  $("show-images").addEventListener("click", () => {
    if (state.openId) $("html-frame").src = api("/messages/" + state.openId + "/html?images=1");
  });
  $("copy-alias").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("alias").textContent));
  $("delete-mailbox").addEventListener("click", async () => {
    if (!state.mailbox || !confirm("Delete every message of " + state.mailbox + "?")) return;
    await getJSON(api("/mailboxes/" + encodeURIComponent(state.mailbox)), { method: "DELETE" });
    load(1);
  });
  document.querySelectorAll(".tabs [role=tab]").forEach((b) => b.addEventListener("click", () => selectTab(b.dataset.tab)));
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target instanceof HTMLButtonElement && (e.key === "Enter" || e.key === " ")) return;
    switch (e.key) {
      case "/": e.preventDefault(); $("mailbox-input").focus(); $("mailbox-input").select(); break;
      case "j": move(1); break;
      case "k": move(-1); break;
      case "o": case "Enter": if (state.messages[state.current]) openMessage(state.messages[state.current].id); break;
      case "#": case "Delete": deleteMessage(); break;
      case "r": if (state.mailbox !== null) load(1); break;
      case "Escape": closeMessage(); break;
      default: return;
    }
  });
  window.addEventListener("hashchange", fromHash);
  setInterval(() => { if (state.messages.length) render(); }, 60000);
  fromHash();
  if (state.mailbox === null) render();
});
