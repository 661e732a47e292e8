// Intake web inbox: the "HTML check" and "Link check" tabs of a message, shown when the
// server has those checks on (GET /api/v1/checks). Loaded after app.js and message.js,
// whose globals (state, request, api, messagePath, el, $, selectTab) it uses; it adds its
// own tab buttons and panels, so selectTab shows and hides them like the others.
"use strict";

const checkTabs = {
  "html-check": { label: "HTML check", load: loadHtmlCheck },
  "link-check": { label: "Link check", load: loadLinkCheck },
};

function addCheckTab(name) {
  const tab = el("button", null, checkTabs[name].label);
  Object.assign(tab, { type: "button", id: "tab-" + name, tabIndex: -1 });
  tab.setAttribute("role", "tab");
  tab.setAttribute("aria-selected", "false");
  tab.setAttribute("aria-controls", "panel-" + name);
  tab.dataset.tab = name;
  document.querySelector(".tabs[role=tablist]").appendChild(tab);
  const panel = el("div");
  Object.assign(panel, { id: "panel-" + name, hidden: true });
  panel.setAttribute("role", "tabpanel");
  panel.setAttribute("aria-labelledby", tab.id);
  panel.dataset.panel = name;
  document.querySelector(".tab-body").appendChild(panel);
  tab.addEventListener("click", () => {
    selectTab(name, false);
    checkTabs[name].load(panel, false);
  });
}

// Runs `fetchReport` for the open message into `panel` (once per message, unless `again`).
async function runCheck(panel, again, fetchReport, show) {
  const id = state.openId;
  if (!id || (!again && panel.dataset.id === id)) return;
  panel.dataset.id = id;
  panel.replaceChildren(el("p", "notice", "Checking\u2026"));
  try {
    const report = await fetchReport(id);
    if (state.openId === id) show(panel, report);
  } catch (e) {
    if (state.openId !== id) return;
    panel.replaceChildren(el("p", "notice", e.message));
    delete panel.dataset.id;
  }
}

function checkTable(heads, rows) {
  const table = el("table", "headers");
  const tr = el("tr");
  heads.forEach((h) => { const th = el("th", null, h); th.scope = "col"; tr.appendChild(th); });
  table.appendChild(el("thead")).appendChild(tr);
  const body = table.appendChild(el("tbody"));
  rows.forEach((cells) => {
    const r = body.appendChild(el("tr"));
    cells.forEach((c) => r.appendChild(el("td", null, c)));
  });
  return table;
}

const pct = (n) => Math.round(n * 10) / 10 + "%";

function loadHtmlCheck(panel, again) {
  return runCheck(panel, again, (id) => request(messagePath(id) + "/html-check"), (p, r) => {
    const t = r.Total;
    const summary = el("p", "notice", "Supported " + pct(t.Supported) + " \u00b7 partially " +
      pct(t.Partial) + " \u00b7 not supported " + pct(t.Unsupported) + " (" + t.Tests +
      " features tested on " + t.Nodes + " elements; data: caniemail.com)");
    summary.id = "html-check-summary";
    const rows = r.Warnings.map((w) => [w.Title, w.Category, w.Score.Found,
      pct(w.Score.Supported), pct(w.Score.Partial), pct(w.Score.Unsupported)]);
    p.replaceChildren(summary, rows.length
      ? checkTable(["Feature", "Kind", "Uses", "Supported", "Partial", "Not supported"], rows)
      : el("p", "muted", "No feature with limited support found."));
  });
}

function loadLinkCheck(panel, again) {
  const follow = $("link-check-follow");
  const query = follow && follow.checked ? "?follow=true" : "";
  return runCheck(panel, again, (id) => request(messagePath(id) + "/link-check" + query), (p, r) => {
    const box = el("input");
    Object.assign(box, { type: "checkbox", id: "link-check-follow", checked: !!query });
    box.addEventListener("change", () => loadLinkCheck(panel, true));
    const label = el("label", null, " Follow redirects");
    label.prepend(box);
    const summary = el("p", "notice", r.Links.length + " links, " + r.Errors + " with errors");
    summary.id = "link-check-summary";
    summary.appendChild(label);
    p.replaceChildren(summary, checkTable(["Link", "Status code", "Status"],
      r.Links.map((l) => [l.URL, l.StatusCode, l.Status])));
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  let on;
  try { on = await request(api("/checks")); } catch (_) { return; /* an older server */ }
  if (on.html) addCheckTab("html-check");
  if (on.link) addCheckTab("link-check");
});
