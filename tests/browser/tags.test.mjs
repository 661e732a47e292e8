// Browser tests of tags in the web inbox: shown in the list and on the message (live, from
// an X-Tags header), added and removed on the open message, added to and removed from a
// selection, and searched for (the harness: harness.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { apiJSON, base, cspViolations, item, items, page, sendMail, setup, shots, until } from "./harness.mjs";

setup();

const chips = (subject) => item(subject).locator(".tags .tag").allTextContents();
const openTags = () => page.locator("#view-tags .tag span").allTextContents();
const tagsInStore = async (id) => (await apiJSON(`/api/v1/messages/${id}`)).tags;

test("tags are shown, added, removed, bulk-changed and searched", { timeout: 40_000 }, async () => {
  await page.goto(base + "/#/tess@example.test");
  await page.locator("#status.live").waitFor();

  // Shown: a message tagged on arrival (X-Tags) shows its tags in the list, live.
  const tagged = await sendMail("tess@example.test", [
    "From: billing@shop.example", "Subject: Tagged bill", "X-Tags: Urgent, billing", "", "pay",
  ]);
  await item("Tagged bill").waitFor();
  await until("its tags in the list", async () => (await chips("Tagged bill")).join() === "Urgent,billing");

  // ... and on the message.
  await item("Tagged bill").click();
  await page.locator("#message-view").waitFor({ state: "visible" });
  await until("its tags on the message", async () => (await openTags()).join() === "Urgent,billing");
  assert.equal(await page.locator("#no-tags").isVisible(), false);

  // Added: typed in the tag box (t focuses it), Enter adds it; the list row follows.
  await page.locator("#view-subject").focus();
  await page.keyboard.press("t");
  assert.equal(await page.evaluate(() => document.activeElement.id), "tag-input");
  await page.keyboard.type("follow up");
  await page.keyboard.press("Enter");
  await until("the added tag", async () => (await openTags()).join() === "Urgent,billing,follow up");
  assert.equal(await page.inputValue("#tag-input"), "", "the box empties");
  assert.deepEqual(await chips("Tagged bill"), ["Urgent", "billing", "follow up"]);
  assert.deepEqual(await tagsInStore(tagged), ["Urgent", "billing", "follow up"]);
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, "tags-message.png") });

  // Removed: its x button.
  await page.click('#view-tags button[aria-label="Remove tag billing"]');
  await until("the tag to go", async () => (await openTags()).join() === "Urgent,follow up");
  assert.deepEqual(await chips("Tagged bill"), ["Urgent", "follow up"]);
  assert.deepEqual(await tagsInStore(tagged), ["Urgent", "follow up"]);
  await page.click("#back");

  // Bulk: two untagged messages picked, one tag added to both.
  const one = await sendMail("tess@example.test", ["From: a@example.net", "Subject: Plain one", "", "1"]);
  const two = await sendMail("tess@example.test", ["From: a@example.net", "Subject: Plain two", "", "2"]);
  await until("three messages", async () => (await items().count()) === 3);
  assert.equal(await item("Plain one").locator(".tags").count(), 0, "no tags, no chips");
  await item("Plain one").locator("input.pick").check();
  await item("Plain two").locator("input.pick").check();
  await page.fill("#bulk-tag-input", "batch");
  await page.click("#bulk-tag");
  await until("both tagged", async () =>
    (await chips("Plain one")).join() === "batch" && (await chips("Plain two")).join() === "batch");
  assert.equal(await page.textContent("#selected-count"), "", "the selection is done with");
  assert.deepEqual(await tagsInStore(one), ["batch"]);
  assert.deepEqual(await tagsInStore(two), ["batch"]);
  assert.deepEqual(await chips("Tagged bill"), ["Urgent", "follow up"], "not picked, not changed");
  await page.screenshot({ path: path.join(shots, "tags-list.png") });

  // Bulk removal: the tag goes from the one picked, whatever its case.
  await item("Plain two").locator("input.pick").check();
  await page.fill("#bulk-tag-input", "BATCH");
  await page.click("#bulk-untag");
  await until("untagged", async () => (await item("Plain two").locator(".tags").count()) === 0);
  assert.deepEqual(await tagsInStore(two), []);
  assert.deepEqual(await chips("Plain one"), ["batch"]);

  // Searched: from the search box, the query in the URL.
  await page.fill("#search-input", "tag:batch");
  await page.press("#search-input", "Enter");
  await until("the search", async () => (await page.textContent("#list-title")) === "Search");
  await until("one result", async () => (await items().count()) === 1);
  assert.match(await items().first().textContent(), /Plain one/);
  assert.equal(decodeURIComponent(new URL(page.url()).hash), "#search/mailbox:tess@example.test tag:batch");
  await page.fill("#search-input", "mailbox:tess@example.test is:tagged");
  await page.press("#search-input", "Enter");
  await until("the tagged two", async () => (await items().count()) === 2);
  assert.deepEqual((await items().allTextContents()).map((t) => /Plain one|Tagged bill/.exec(t)[0]), ["Plain one", "Tagged bill"]);
  await page.fill("#search-input", "mailbox:tess@example.test -is:tagged");
  await page.press("#search-input", "Enter");
  await until("the untagged one", async () => (await items().count()) === 1 && /Plain two/.test(await items().first().textContent()));

  // A tag in the list searches for its mail.
  await page.goto(base + "/#/tess@example.test");
  await item("Tagged bill").waitFor();
  await item("Tagged bill").locator('.tag[data-tag="follow up"]').click();
  await until("the tag's search", async () => (await page.inputValue("#search-input")) === 'mailbox:tess@example.test tag:"follow up"');
  await until("its one message", async () => (await items().count()) === 1 && /Tagged bill/.test(await items().first().textContent()));
  assert.equal(await page.locator("#message-view").isVisible(), false, "the chip did not open the message");
  assert.deepEqual(await cspViolations(page), []);
});
