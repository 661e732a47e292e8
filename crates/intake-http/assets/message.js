// Intake web inbox: one message (its header, the HTML frame sized to its content, text,
// headers, source, attachments; delete, mark read on opening). Loaded after app.js, whose
// globals (state, request, el, render, ...) it uses.
"use strict";

// ---- one message ----------------------------------------------------------------------

function selectTab(name, focus) {
  document.querySelectorAll(".tabs [role=tab]").forEach((b) => {
    const on = b.dataset.tab === name;
    b.setAttribute("aria-selected", String(on));
    b.tabIndex = on ? 0 : -1;
    if (on && focus) b.focus();
  });
  document.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== name; });
  if (name === "raw") loadRaw();
  if (name === "html") fitFrame();
}

async function loadRaw() {
  const pre = $("view-raw");
  const id = state.openId;
  if (!id || pre.dataset.id === id) return;
  pre.dataset.id = id;
  pre.textContent = "Loading\u2026";
  try {
    const r = await fetch(messagePath(id) + "/raw");
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const text = await r.text();
    if (state.openId === id) pre.textContent = text;
  } catch (e) {
    if (state.openId === id) { pre.textContent = "Could not load the source: " + e.message; delete pre.dataset.id; }
  }
}

function setFrame(id, images) {
  const frame = $("html-frame");
  // Defence in depth: whatever happened to the markup, the frame stays sandboxed without
  // scripts (its route's CSP says the same). Its origin is kept so that fitFrame can read
  // the content's height.
  frame.setAttribute("sandbox", "allow-same-origin");
  frame.style.height = "";
  frame.src = id ? messagePath(id) + "/html" + (images ? "?images=1" : "") : "about:blank";
}

// Sizes the message frame to its content (the page scrolls, not the frame).
function fitFrame() {
  const frame = $("html-frame");
  let doc = null;
  try { doc = frame.contentDocument; } catch (_) { doc = null; }
  if (!doc || !doc.documentElement || frame.offsetParent === null) return;
  frame.style.height = "0px"; // so that the content, not the old frame, sets the height
  const h = doc.documentElement.scrollHeight;
  frame.style.height = Math.max(48, h + 2) + "px"; // + the frame's borders
}

// Remote images an HTML body would load (src, background, CSS url()), by a rough look.
function hasRemoteImages(html) {
  return /(?:src|background|srcset)\s*=\s*["']?\s*(?:https?:)?\/\/|url\(\s*["']?\s*(?:https?:)?\/\//i.test(html || "");
}

async function openMessage(id) {
  const gen = state.gen;
  let m;
  try {
    m = await request(messagePath(id));
  } catch (e) {
    if (gen !== state.gen) return;
    showError(e.status === 404 ? "That message no longer exists." : "Could not open the message: " + e.message);
    if (state.openId === id || parseHash().id === id) { state.openId = null; syncHash(); }
    return;
  }
  if (gen !== state.gen) return;
  showError("");
  const wasOpen = !!state.openId;
  state.openId = id;
  state.currentId = id;
  state.imagesShown = false;
  syncHash();
  document.body.classList.add("viewing");
  $("message-view").hidden = false;
  $("view-subject").textContent = m.subject || "(no subject)";
  showOpenTags(id, m.tags || []); // tags.js

  const meta = $("view-meta");
  meta.replaceChildren();
  const add = (k, v, title) => {
    if (!v) return;
    const dd = el("dd", null, v);
    if (title) dd.title = title;
    meta.append(el("dt", null, k), dd);
  };
  const rcpts = (m.rcpt_to || []).join(", ");
  add("From", m.from || m.mail_from || "<>");
  add("To", m.to || rcpts);
  add("Cc", m.cc);
  add("Envelope", (m.mail_from || "<>") + " \u2192 " + rcpts);
  const received = new Date(m.received_at);
  add("Received", fmtFull.format(received) + (relative(received) ? " (" + relative(received) + ")" : ""), m.received_at);
  if (m.client) add("Client", (m.helo ? m.helo + " " : "") + "[" + m.client.ip + "]" + (m.tls ? " with TLS" : ""));
  add("Size", size(m.size));
  const c = m.checks;
  if (c) {
    const auth = ["spf", "dkim", "dmarc", "arc"].filter((k) => c[k]).map((k) => k.toUpperCase() + " " + c[k]);
    add("Authentication", auth.join(", "));
    add("Spam score", c.scanner || (c.score ? String(c.score) : ""), (c.symbols || []).join(", "));
    add("DNS lists", (c.lists || []).join(", "));
    if (!c.scanner && c.symbols && c.symbols.length) add("Checks", c.symbols.join(", "));
    add("Not checked", (c.undecided || []).map((u) => u.check + " (could not decide: " + u.reason + ")").join(", "));
  }

  const raw = messagePath(id) + "/raw";
  $("download-raw").href = raw;
  $("download-raw-2").href = raw;
  $("download-raw").setAttribute("download", id + ".eml");
  $("download-raw-2").setAttribute("download", id + ".eml");

  setFrame(id, false);
  $("show-images").disabled = false;
  $("images-note").textContent = "Remote images are blocked.";
  $("images-notice").hidden = !hasRemoteImages(m.html);
  $("tab-html").hidden = !m.html;
  $("view-text").textContent = m.text || "(no text part)";

  const tbody = $("view-headers").tBodies[0];
  tbody.replaceChildren();
  (m.headers || []).forEach((h) => {
    const tr = el("tr");
    tr.append(el("th", null, h.name), el("td", null, h.value));
    tr.firstChild.scope = "row";
    tbody.append(tr);
  });

  $("view-raw").textContent = "";
  delete $("view-raw").dataset.id;

  const atts = $("view-attachments");
  atts.replaceChildren();
  const list = m.attachment_list || [];
  if (list.length === 0) atts.append(el("li", "muted", "No attachments."));
  list.forEach((a) => {
    const li = el("li");
    const link = el("a", null, a.name || "attachment " + a.part);
    link.href = messagePath(id) + "/attachments/" + encodeURIComponent(a.part);
    link.setAttribute("download", a.name || "");
    li.append(link, el("span", "muted", " " + (a.content_type || "") + ", " + size(a.size)));
    atts.append(li);
  });
  $("tab-attachments").textContent = "Attachments (" + list.length + ")";
  $("tab-attachments").hidden = list.length === 0;

  selectTab(m.html ? "html" : "text", false);
  render();
  if (!wasOpen || document.activeElement === document.body) $("view-subject").focus({ preventScroll: true });
  const li = $(rowId(id));
  if (li) li.scrollIntoView({ block: "nearest" });

  if (!m.seen) {
    try {
      await request(messagePath(id) + "/read", { method: "POST" });
      const s = state.messages.find((x) => x.id === id);
      if (s && !s.seen) {
        s.seen = true;
        state.unread = Math.max(0, state.unread - 1);
        render();
      }
    } catch (_) { /* the flag stays; not worth an error */ }
  }
}

// Back to the list; focus goes to the list when asked or when it was in the message.
function closeMessage(focusList) {
  const wasFocusedInside = $("message-view").contains(document.activeElement);
  state.openId = null;
  document.body.classList.remove("viewing");
  $("message-view").hidden = true;
  setFrame(null);
  syncHash();
  render();
  if (wasFocusedInside || focusList) $("message-list").focus({ preventScroll: true });
}

async function deleteMessage() {
  if (!state.access.delete) return;
  const id = state.openId || state.currentId;
  if (!id) return;
  try {
    await request(messagePath(id), { method: "DELETE" });
  } catch (e) {
    if (e.status !== 404) { showError("Could not delete: " + e.message); return; }
  }
  removeLocal(id);
  if (state.openId === id) closeMessage(true);
  else render();
}
