// Intake web inbox: picking messages and changing them together (mark read or unread,
// delete; tag: tags.js), and marking the open message unread. Loaded after app.js, whose globals
// (state, request, api, render, ...) it uses; the API routes are POST
// /api/v1/messages/read and /api/v1/messages/delete, with the ids.
"use strict";

function toggleSelected(id, on) {
  const want = on === undefined ? !state.selected.has(id) : on;
  if (want) state.selected.add(id);
  else state.selected.delete(id);
  render();
}

// The toolbar above the list: shown with a list, its actions enabled with a selection.
function renderSelection() {
  const shown = state.messages.filter((m) => state.selected.has(m.id)).length;
  // Ids no longer listed (deleted meanwhile) leave the selection.
  if (shown !== state.selected.size) {
    const listed = new Set(state.messages.map((m) => m.id));
    state.selected.forEach((id) => { if (!listed.has(id)) state.selected.delete(id); });
  }
  const n = state.selected.size;
  $("bulk").hidden = state.messages.length === 0;
  const all = $("select-all");
  all.checked = n > 0 && n === state.messages.length;
  all.indeterminate = n > 0 && n < state.messages.length;
  $("selected-count").textContent = n ? n + " selected" : "";
  ["bulk-read", "bulk-unread", "bulk-delete", "bulk-tag", "bulk-untag"].forEach((b) => { $(b).disabled = n === 0; });
  $("bulk-delete").hidden = !state.access.delete;
}

async function markSelected(read) {
  const ids = Array.from(state.selected);
  if (!ids.length) return;
  try {
    await request(api("/messages/read"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ ids, read }),
    });
  } catch (e) {
    showError("Could not mark them " + (read ? "read" : "unread") + ": " + e.message);
    return;
  }
  ids.forEach((id) => setSeenLocal(id, read));
  state.selected.clear();
  render();
}

async function deleteSelected() {
  const ids = Array.from(state.selected);
  if (!ids.length || !state.access.delete) return;
  if (!confirm("Delete " + (ids.length === 1 ? "this message" : "these " + ids.length + " messages") + "? This cannot be undone.")) return;
  try {
    await request(api("/messages/delete"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ ids }),
    });
  } catch (e) {
    showError("Could not delete them: " + e.message);
    return;
  }
  ids.forEach((id) => removeLocal(id));
  if (ids.includes(state.openId)) closeMessage(true);
  state.selected.clear();
  render();
}

function setSeenLocal(id, seen) {
  const m = state.messages.find((x) => x.id === id);
  if (!m || m.seen === seen) return;
  m.seen = seen;
  state.unread = Math.max(0, state.unread + (seen ? -1 : 1));
}

// Marks the open message unread and goes back to the list (staying open would read it).
async function markUnread() {
  const id = state.openId;
  if (!id) return;
  try {
    await request(messagePath(id) + "/read", { method: "DELETE" });
  } catch (e) {
    showError("Could not mark it unread: " + e.message);
    return;
  }
  setSeenLocal(id, false);
  closeMessage(true);
}

document.addEventListener("DOMContentLoaded", () => {
  $("select-all").addEventListener("change", (e) => {
    state.selected.clear();
    if (e.target.checked) state.messages.forEach((m) => state.selected.add(m.id));
    render();
  });
  $("bulk-read").addEventListener("click", () => markSelected(true));
  $("bulk-unread").addEventListener("click", () => markSelected(false));
  $("bulk-delete").addEventListener("click", deleteSelected);
  $("unread-message").addEventListener("click", markUnread);
});
