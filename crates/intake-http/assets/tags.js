// Intake web inbox: tags. Shown on each listed message (a tag searches for its mail) and on
// the open message, where they are added and removed; added to or removed from the
// selected messages at once. Loaded after app.js and selection.js, whose globals (state,
// request, api, el, render, goSearch, ...) it uses. API: PUT /api/v1/messages/{id}/tags
// (the open message's tags), POST /api/v1/messages/tags (a selection's), GET /api/v1/tags
// (every tag, for suggestions, where all mail is open to this client).
"use strict";

// A search for one tag: quoted when the tag has a space.
function tagQuery(tag) {
  return "tag:" + (/\s/.test(tag) ? '"' + tag + '"' : tag);
}

// The tags of a listed message, as chips; each one searches for its tag.
function tagChips(tags) {
  const box = el("span", "tags");
  (tags || []).forEach((t) => {
    const chip = el("button", "tag", t);
    chip.type = "button";
    chip.tabIndex = -1;
    chip.dataset.tag = t;
    chip.title = "Show mail tagged " + t;
    box.append(chip);
  });
  return box;
}

// What the user typed: tags separated by commas.
function typedTags(text) {
  return text.split(",").map((t) => t.trim()).filter((t) => t);
}

// The open message's tags, each with a button that removes it.
function renderOpenTags(tags) {
  const list = $("view-tags");
  list.replaceChildren();
  tags.forEach((t) => {
    const li = el("li", "tag");
    li.append(el("span", null, t));
    const x = el("button", "untag", "\u00d7");
    x.type = "button";
    x.dataset.tag = t;
    x.setAttribute("aria-label", "Remove tag " + t);
    x.title = "Remove tag " + t;
    li.append(x);
    list.append(li);
  });
  $("no-tags").hidden = tags.length > 0;
}

// The open message's tags as the server answered them: in its view and its list row.
function showOpenTags(id, tags) {
  state.openTags = tags;
  if (state.openId === id) renderOpenTags(tags);
  const m = state.messages.find((x) => x.id === id);
  if (m) { m.tags = tags; render(); }
}

async function putTags(id, tags, what) {
  try {
    const r = await request(messagePath(id) + "/tags", {
      method: "PUT",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ tags }),
    });
    showError("");
    showOpenTags(id, r.tags);
    loadKnownTags();
    return true;
  } catch (e) {
    showError("Could not " + what + ": " + e.message);
    return false;
  }
}

async function addOpenTags() {
  const id = state.openId;
  const input = $("tag-input");
  const typed = typedTags(input.value);
  if (!id || !typed.length) return;
  if (await putTags(id, (state.openTags || []).concat(typed), "add the tag")) input.value = "";
}

function removeOpenTag(tag) {
  const id = state.openId;
  if (!id) return;
  putTags(id, (state.openTags || []).filter((t) => t !== tag), "remove the tag");
}

// Adds (or removes) the typed tags on every selected message, then re-reads the list.
async function tagSelected(add) {
  const ids = Array.from(state.selected);
  const input = $("bulk-tag-input");
  const typed = typedTags(input.value);
  if (!ids.length) return;
  if (!typed.length) { input.focus(); return; }
  const body = add ? { ids, add: typed } : { ids, remove: typed };
  try {
    await request(api("/messages/tags"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    showError("Could not " + (add ? "tag" : "untag") + " them: " + e.message);
    return;
  }
  input.value = "";
  state.selected.clear();
  loadKnownTags();
  await load(true);
  // The open message's tags may have changed too.
  if (state.openId && ids.includes(state.openId)) {
    const m = state.messages.find((x) => x.id === state.openId);
    if (m) showOpenTags(m.id, m.tags || []);
  }
}

// Suggestions for the tag boxes: every tag in use (only where all mail is open).
async function loadKnownTags() {
  if (!state.access.all_mail) return;
  let tags;
  try { tags = (await request(api("/tags"))).tags; } catch (_) { return; }
  $("known-tags").replaceChildren(...tags.map((t) => { const o = el("option"); o.value = t; return o; }));
}

document.addEventListener("DOMContentLoaded", () => {
  $("tag-form").addEventListener("submit", (e) => { e.preventDefault(); addOpenTags(); });
  $("view-tags").addEventListener("click", (e) => {
    const x = e.target.closest("button.untag");
    if (x) removeOpenTag(x.dataset.tag);
  });
  $("bulk-tag").addEventListener("click", () => tagSelected(true));
  $("bulk-untag").addEventListener("click", () => tagSelected(false));
  $("bulk-tag-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); tagSelected(true); }
  });
  // A tag in the list searches for its mail (before the row's click opens the message).
  $("message-list").addEventListener("click", (e) => {
    const chip = e.target.closest("button.tag");
    if (!chip) return;
    e.stopPropagation();
    goSearch(tagQuery(chip.dataset.tag));
  }, true);
  // Suggestions are read when a tag box is first used (by then access is known).
  $("tag-input").addEventListener("focus", loadKnownTags, { once: true });
  $("bulk-tag-input").addEventListener("focus", loadKnownTags, { once: true });
});
