// Browser tests of the web inbox's start page, search, inline images and frame, and
// changes to many messages (the harness: harness.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  apiJSON, base, cspViolations, item, items, page, sendMail, setup, shots, tracker,
  trackerHits, until,
} from "./harness.mjs";

setup();

// A 1x1 PNG, shown 120x40 so that a screenshot shows it.
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

test("the start page shows the latest mail, live, in open mode", { timeout: 20_000 }, async () => {
  await sendMail("frank@example.test", ["From: a@example.net", "Subject: For Frank", "", "f"]);
  await sendMail("erin@example.test", ["From: a@example.net", "Subject: For Erin", "", "e"]);
  await page.goto(base + "/");
  await page.locator("#status.live").waitFor();
  assert.equal(await page.textContent("#list-title"), "Latest mail");
  assert.equal(await page.locator("#intro").isVisible(), false);
  assert.equal(new URL(page.url()).hash, "", "the start page keeps its address");
  await item("For Frank").waitFor();
  await item("For Erin").waitFor(); // another mailbox's mail
  assert.match(await item("For Erin").textContent(), /to erin@example\.test/, "whose mail it is");
  await sendMail("gina@example.test", ["From: a@example.net", "Subject: For Gina", "", "g"]);
  await item("For Gina").waitFor();
  assert.match(await items().first().textContent(), /For Gina/, "newest first");
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, "landing-open.png") });
  assert.deepEqual(await cspViolations(page), []);
});

test("search: filters and words, the query in the URL, back and forward", { timeout: 25_000 }, async () => {
  await sendMail("hank@example.test", ["From: Invoices <billing@shop.example>", "Subject: Invoice 17", "", "please pay"]);
  await sendMail("hank@example.test", ["From: friend@example.net", "Subject: Lunch", "", "the invoice is paid"]);
  await sendMail("ivy@example.test", ["From: billing@shop.example", "Subject: Invoice 18", "", "please pay"]);
  await page.goto(base + "/#all");
  await item("Invoice 18").waitFor();

  await page.keyboard.press("s");
  assert.equal(await page.evaluate(() => document.activeElement.id), "search-input");
  await page.fill("#search-input", "from:billing@shop.example subject:invoice");
  await page.press("#search-input", "Enter");
  await until("two results", async () => (await items().count()) === 2);
  assert.deepEqual((await items().allTextContents()).map((t) => /Invoice 1[78]/.exec(t)[0]), ["Invoice 18", "Invoice 17"]);
  assert.match(await page.textContent("#counts"), /^2 results/);
  assert.equal(await page.textContent("#list-title"), "Search");
  assert.equal(decodeURIComponent(new URL(page.url()).hash), "#search/from:billing@shop.example subject:invoice");
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, "search.png") });

  // A result opens like mail in a mailbox, and the URL keeps the search.
  await item("Invoice 17").click();
  await page.locator("#message-view").waitFor({ state: "visible" });
  assert.match(decodeURIComponent(new URL(page.url()).hash), /^#search\/from:billing@shop\.example subject:invoice\/.+/);
  await page.click("#back");

  // From a mailbox, a search searches that mailbox.
  await page.goto(base + "/#/hank@example.test");
  await item("Lunch").waitFor();
  await page.fill("#search-input", "invoice");
  await page.press("#search-input", "Enter");
  await until("the search", async () => (await page.textContent("#list-title")) === "Search");
  await until("the mailbox's two results", async () => (await items().count()) === 2);
  assert.equal(await page.inputValue("#search-input"), "mailbox:hank@example.test invoice");
  assert.ok(!(await items().allTextContents()).some((t) => t.includes("Invoice 18")), "not ivy's mail");

  // Back returns to the mailbox, forward to the search.
  await page.goBack();
  await until("the mailbox again", async () => (await page.textContent("#list-title")) === "hank@example.test");
  await page.goForward();
  await until("the search again", async () => (await page.textContent("#list-title")) === "Search");
  assert.equal(await page.inputValue("#search-input"), "mailbox:hank@example.test invoice");
  await page.goBack();
  await page.goBack();
  await until("the first search", async () => (await page.inputValue("#search-input")) === "from:billing@shop.example subject:invoice");
  await until("its two results", async () => (await items().count()) === 2);

  // A bookmarked search reloads; a malformed one says why.
  await page.reload();
  await until("the results after a reload", async () => (await items().count()) === 2);
  await page.fill("#search-input", "subject:\"unbalanced");
  await page.press("#search-input", "Enter");
  await page.locator("#error:not([hidden])").waitFor();
  assert.match(await page.textContent("#error"), /Could not search: .*quote/);
  assert.deepEqual(await cspViolations(page), []);
});

test("inline images show, remote ones wait, the frame fits its content, tabs only when useful", { timeout: 25_000 }, async () => {
  const trackerUrl = `http://127.0.0.1:${tracker.address().port}/inline-tracker.png`;
  const before = trackerHits.length;
  const tall = Array.from({ length: 60 }, (_, i) => `<p>Line ${i + 1} of a long letter.</p>`).join("");
  await page.goto(base + "/#/jane@example.test");
  await page.locator("#status.live").waitFor();
  await sendMail("jane@example.test", [
    "From: news@example.net", "Subject: With a logo", "MIME-Version: 1.0",
    "Content-Type: multipart/related; boundary=\"rel\"", "",
    "--rel", "Content-Type: text/html; charset=utf-8", "",
    `<p>Our logo: <img id="logo" src="cid:logo@example.net" width="120" height="40" alt="logo"></p>`,
    `<p><img src="${trackerUrl}" alt="tracker"></p>${tall}<p id="last">The end.</p>`,
    "--rel", "Content-Type: image/png; name=logo.png", "Content-ID: <logo@example.net>",
    "Content-Disposition: inline; filename=logo.png", "Content-Transfer-Encoding: base64", "",
    PNG, "--rel--",
  ]);
  await item("With a logo").click();
  const frame = page.frameLocator("#html-frame");
  await frame.locator("#last").waitFor();
  await until("the inline image to load", async () =>
    frame.locator("#logo").evaluate((img) => img.complete && img.naturalWidth === 1));
  assert.match(await frame.locator("#logo").getAttribute("src"), /^\/api\/v1\/messages\/[^/]+\/attachments\/0$/);
  assert.equal(trackerHits.length, before, "the remote image was not fetched");
  assert.equal(await page.locator("#images-notice").isVisible(), true, "the offer to show remote images");

  // The frame is as tall as its content: the page scrolls, the frame does not.
  await until("the frame to fit", async () => {
    const [frameH, contentH] = await page.evaluate(() => {
      const f = document.getElementById("html-frame");
      return [f.clientHeight, f.contentDocument.documentElement.scrollHeight];
    });
    return contentH > 800 && Math.abs(frameH - contentH) <= 2;
  });
  assert.equal(await page.locator("#tab-html").isVisible(), true);
  assert.equal(await page.locator("#tab-attachments").isVisible(), true, "the logo is a part");
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, "inline-image.png") });

  await page.click("#show-images");
  await until("the remote image when asked", () => trackerHits.length > before);
  await frame.locator("#last").waitFor();

  // A short text message: no HTML tab, no Attachments tab, and a frame that is not tall.
  await sendMail("jane@example.test", ["From: a@example.net", "Subject: Just text", "", "only text"]);
  await item("Just text").click();
  await until("the text message", async () => (await page.textContent("#view-subject")) === "Just text");
  assert.equal(await page.locator("#tab-html").isVisible(), false, "no HTML tab");
  assert.equal(await page.locator("#tab-attachments").isVisible(), false, "no Attachments tab");
  assert.equal(await page.locator("#panel-text").isVisible(), true);
  assert.deepEqual(await cspViolations(page), []);
});

test("select many to mark read, unread or delete; mark the open message unread", { timeout: 25_000 }, async () => {
  await page.goto(base + "/#/kim@example.test");
  await page.locator("#status.live").waitFor();
  for (const s of ["One", "Two", "Three"]) await sendMail("kim@example.test", ["From: a@example.net", `Subject: Pick ${s}`, "", s]);
  await until("three messages", async () => (await items().count()) === 3);
  assert.match(await page.textContent("#counts"), /3 messages · 3 unread/);

  await item("Pick One").locator("input.pick").check();
  await item("Pick Two").locator("input.pick").check();
  assert.equal(await page.textContent("#selected-count"), "2 selected");
  assert.equal(await page.locator("#message-view").isVisible(), false, "picking does not open");
  await page.click("#bulk-read");
  await until("one unread", async () => /3 messages · 1 unread/.test(await page.textContent("#counts")));
  assert.doesNotMatch(await item("Pick One").getAttribute("class"), /\bunread\b/);
  assert.match(await item("Pick Three").getAttribute("class"), /\bunread\b/);
  let listing = await apiJSON("/api/v1/mailboxes/kim@example.test/messages");
  assert.equal(listing.unread, 1, "read in the store too");
  fs.mkdirSync(shots, { recursive: true });

  // Select all, mark unread.
  await page.check("#select-all");
  assert.equal(await page.textContent("#selected-count"), "3 selected");
  await page.screenshot({ path: path.join(shots, "selection.png") });
  await page.click("#bulk-unread");
  await until("all unread", async () => /3 messages · 3 unread/.test(await page.textContent("#counts")));
  assert.equal((await apiJSON("/api/v1/mailboxes/kim@example.test/messages")).unread, 3);

  // The open message: opening reads it, Mark unread returns to the list, unread.
  await item("Pick Two").click();
  await page.locator("#message-view").waitFor({ state: "visible" });
  await until("read on opening", async () => !/\bunread\b/.test(await item("Pick Two").getAttribute("class")));
  await page.click("#unread-message");
  await page.locator("#message-view").waitFor({ state: "hidden" });
  assert.match(await item("Pick Two").getAttribute("class"), /\bunread\b/);
  listing = await apiJSON("/api/v1/mailboxes/kim@example.test/messages");
  assert.equal(listing.messages.find((m) => m.subject === "Pick Two").seen, false);

  // Delete two at once (with x on the keyboard for one of them).
  await item("Pick One").locator("input.pick").check();
  await page.locator("#message-list").focus();
  await page.keyboard.press("k"); // from Pick Two, the last one opened, up to Pick Three
  await page.keyboard.press("x");
  assert.equal(await page.textContent("#selected-count"), "2 selected");
  page.once("dialog", (d) => d.accept());
  await page.click("#bulk-delete");
  await item("Pick One").waitFor({ state: "detached" });
  await item("Pick Three").waitFor({ state: "detached" });
  assert.equal(await items().count(), 1);
  listing = await apiJSON("/api/v1/mailboxes/kim@example.test/messages");
  assert.deepEqual(listing.messages.map((m) => m.subject), ["Pick Two"]);
  assert.deepEqual(await cspViolations(page), []);
});
