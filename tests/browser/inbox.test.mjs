// Browser test of Intake's web inbox (the harness: harness.mjs): new mail appears without
// reloading, a message opens (text, headers, source) and can be deleted, the URL can be
// bookmarked, the keyboard works, a hostile HTML message neither runs script nor loads a
// remote image until the reader asks, phones, public mode, the checks' findings.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fs from "node:fs";
import path from "node:path";
import {
  WAIT, apiJSON, base, browser, consoleLines, cspViolations, item, items, openMailbox, page,
  sendMail, setup, shots, startIntake, tracker, trackerHits, until,
} from "./harness.mjs";

setup();

test("new mail appears live, opens, is marked read and is deleted", { timeout: 20_000 }, async () => {
  await page.goto(base + "/");
  await openMailbox(page, "alice@example.test");
  assert.equal(new URL(page.url()).hash, "#/alice@example.test", "the URL names the mailbox");
  // The alias comes with the listing, which may land after the live stream connected.
  await page.locator("#alias-box:not([hidden])").waitFor();
  assert.match(await page.textContent("#alias"), /^d-[a-z2-7]{12}@example\.test$/);
  // Marks this document: if the page reloaded, the marker would be gone.
  await page.evaluate(() => { window.__sameDocument = true; });

  const id = await sendMail("alice@example.test", [
    "From: Bob <bob@example.net>", "To: alice@example.test", "Subject: Live hello", "",
    "Hello from the browser test.", ".a line that starts with a dot",
  ]);
  await item("Live hello").waitFor();
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "shown without reloading");
  if (id) assert.equal(await item("Live hello").getAttribute("data-id"), id);
  assert.match(await item("Live hello").getAttribute("class"), /\bunread\b/);
  assert.match(await page.textContent("#counts"), /1 message · 1 unread/);

  await item("Live hello").click();
  await page.locator("#message-view").waitFor({ state: "visible" });
  assert.equal(await page.textContent("#view-subject"), "Live hello");
  assert.equal(await page.getAttribute("#html-frame", "sandbox"), "allow-same-origin", "sandboxed, no scripts");
  await page.click("#tab-text");
  assert.match(await page.textContent("#view-text"), /Hello from the browser test\.\s+\.a line that starts with a dot/);
  await page.click("#tab-headers");
  await page.locator("#view-headers th", { hasText: /^Subject$/ }).waitFor();
  await page.click("#tab-raw");
  await until("the raw source", async () => /Subject: Live hello/.test(await page.textContent("#view-raw")));
  assert.match(await page.getAttribute("#download-raw", "href"), /\/api\/v1\/messages\/[^/]+\/raw$/);

  // Opening marked it read, in the list and on the server.
  await until("the unread marker to go", async () => !/\bunread\b/.test(await item("Live hello").getAttribute("class")));
  const listing = await apiJSON("/api/v1/mailboxes/alice@example.test/messages");
  assert.equal(listing.messages[0].seen, true);
  assert.match(new URL(page.url()).hash, /^#\/alice@example\.test\/.+/, "the URL names the open message");

  await page.click("#tab-text");
  fs.mkdirSync(shots, { recursive: true });
  const shot = path.join(shots, "inbox.png");
  await page.screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);

  await page.click("#delete-message");
  await item("Live hello").waitFor({ state: "detached" });
  await page.locator("#message-view").waitFor({ state: "hidden" });
  assert.equal(new URL(page.url()).hash, "#/alice@example.test");
  assert.equal((await apiJSON("/api/v1/mailboxes/alice@example.test/messages")).total, 0, "deleted in the store too");
  assert.deepEqual(await cspViolations(page), []);
});

test("a bookmarked mailbox reloads, and the keyboard works", { timeout: 20_000 }, async () => {
  await sendMail("carol@example.test", ["From: a@example.net", "Subject: First", "", "one"]);
  await sendMail("carol@example.test", ["From: b@example.net", "Subject: Second", "", "two"]);
  await page.goto(base + "/#/carol@example.test");
  await page.reload();
  await page.locator("#status.live").waitFor();
  await until("two messages", async () => (await items().count()) === 2);
  assert.deepEqual((await items().allTextContents()).map((t) => /First|Second/.exec(t)[0]), ["Second", "First"], "newest first");
  assert.equal(await page.inputValue("#mailbox-input"), "carol@example.test");

  await page.keyboard.press("/");
  assert.equal(await page.evaluate(() => document.activeElement.id), "mailbox-input");
  await page.keyboard.press("Escape");
  await page.keyboard.press("j");
  await page.keyboard.press("j");
  await page.keyboard.press("k");
  assert.match(await item("Second").getAttribute("class"), /\bcurrent\b/);
  await page.keyboard.press("o");
  await page.locator("#message-view").waitFor({ state: "visible" });
  assert.equal(await page.textContent("#view-subject"), "Second");
  await page.keyboard.press("Escape");
  await page.locator("#message-view").waitFor({ state: "hidden" });
  await page.keyboard.press("#");
  await item("Second").waitFor({ state: "detached" });
  assert.equal(await items().count(), 1);

  // ?mailbox= works too, and becomes the #/ form.
  await page.goto(base + "/?mailbox=carol@example.test");
  await item("First").waitFor();
  assert.equal(new URL(page.url()).hash, "#/carol@example.test");

  // All mail shows every mailbox's mail, and follows it live.
  await page.click("#all-mail");
  await page.locator("#status.live").waitFor();
  assert.equal(new URL(page.url()).hash, "#all");
  await item("First").waitFor();
  await sendMail("dave@example.test", ["From: c@example.net", "Subject: To Dave", "", "three"]);
  await item("To Dave").waitFor();
  assert.deepEqual(await cspViolations(page), []);
});

test("hostile HTML neither runs script nor loads remote images", { timeout: 20_000 }, async () => {
  const trackerUrl = `http://127.0.0.1:${tracker.address().port}/tracker.png`;
  const mark = "try{parent.document.title='pwned'}catch(e){} try{window.top.pwned=1}catch(e){} console.log('pwned')";
  const hostile = [
    "<p>Innocent text</p>",
    `<script>${mark}; document.body.dataset.ran = 1;</script>`,
    `<img src=x onerror="${mark}">`,
  ];
  await page.goto(base + "/");
  await openMailbox(page, "victim@example.test");
  const id = await sendMail("victim@example.test", [
    "From: attacker@example.net", "Subject: Hostile", "MIME-Version: 1.0",
    "Content-Type: text/html; charset=utf-8", "",
    ...hostile,
    `<img src="${trackerUrl}" alt="tracker">`,
  ]);
  await item("Hostile").click();
  const frame = page.frameLocator("#html-frame");
  await frame.locator("text=Innocent text").waitFor();
  await page.waitForTimeout(500); // let anything that could run, run
  // Two layers: the frame's sandbox attribute, and the route's own `sandbox` CSP; neither
  // allows scripts (the origin is kept only so that the page can size the frame).
  assert.equal(await page.getAttribute("#html-frame", "sandbox"), "allow-same-origin");
  assert.match(await page.getAttribute("#html-frame", "src"), /\/api\/v1\/messages\/[^/]+\/html$/);
  if (id) {
    const r = await fetch(`${base}/api/v1/messages/${id}/html`, { signal: AbortSignal.timeout(WAIT) });
    const csp = r.headers.get("content-security-policy") || "";
    assert.match(csp, /(^|;)\s*sandbox allow-same-origin\s*(;|$)/);
    assert.match(csp, /(^|;)\s*script-src 'none'\s*(;|$)/);
    assert.doesNotMatch(csp, /allow-scripts|allow-forms|allow-popups|allow-top/);
  }

  assert.notEqual(await page.title(), "pwned", "no script reached the page");
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await frame.locator("body").getAttribute("data-ran"), null, "no script ran in the frame");
  assert.ok(!consoleLines.some((l) => l.includes("pwned")), "no script logged anything");
  assert.deepEqual(trackerHits, [], "the remote image was not fetched");

  // Asking for images loads them: the test does see a fetch when there is one.
  await page.click("#show-images");
  await until("the tracker to be fetched", () => trackerHits.length > 0);
  assert.deepEqual(trackerHits, ["/tracker.png"]);
  assert.match(await page.getAttribute("#html-frame", "src"), /\/html\?images=1$/);
  assert.equal(await page.getAttribute("#html-frame", "sandbox"), "allow-same-origin", "still sandboxed with images");
  await frame.locator("text=Innocent text").waitFor();
  await page.waitForTimeout(300);
  assert.notEqual(await page.title(), "pwned");
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await frame.locator("body").getAttribute("data-ran"), null);
  assert.ok(!consoleLines.some((l) => l.includes("pwned")));
  assert.deepEqual(await cspViolations(page), []);

  // Control: the same markup in an ordinary frame does set every marker, so the checks
  // above would have seen it run.
  const control = await browser.newPage();
  try {
    const logged = [];
    control.on("console", (m) => logged.push(m.text()));
    const srcdoc = hostile.join("\n").replace(/&/g, "&amp;").replace(/"/g, "&quot;");
    await control.setContent(`<title>control</title><iframe srcdoc="${srcdoc}"></iframe>`);
    await until("the control's script to run", async () => (await control.title()) === "pwned");
    assert.equal(await control.evaluate(() => window.pwned), 1);
    assert.ok(logged.includes("pwned"));
  } finally {
    await control.close();
  }
});

test("on a phone the list and the message take turns", { timeout: 15_000 }, async () => {
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, colorScheme: "dark" });
  phone.setDefaultTimeout(WAIT);
  try {
    await phone.goto(base + "/#/carol@example.test");
    await phone.locator("#message-list li[data-id]", { hasText: "First" }).click();
    await phone.locator("#message-view").waitFor({ state: "visible" });
    assert.equal(await phone.locator(".list-pane").isVisible(), false);
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling (${width}px)`);
    fs.mkdirSync(shots, { recursive: true });
    await phone.screenshot({ path: path.join(shots, "inbox-phone.png") });
    await phone.click("#back");
    await phone.locator(".list-pane").waitFor({ state: "visible" });
  } finally {
    await phone.close();
  }
});

test("in public mode the page offers one mailbox, not all mail, and hides deletes", { timeout: 30_000 }, async () => {
  const pub = await startIntake(
    { INTAKE_HTTP__ACCESS: "public", INTAKE_HTTP__PUBLIC_DELETE: "false" },
    "intake-browser-public-",
  );
  const { smtp, http: httpP } = pub;
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  p.setDefaultTimeout(WAIT);
  try {
    await sendMail("dave@example.test", ["Subject: Public hello", "", "hi"], smtp);
    const pbase = `http://127.0.0.1:${httpP}`;
    await p.goto(pbase + "/");
    await p.locator("body[data-access=mailbox]").waitFor();
    assert.equal(await p.locator("#all-mail").isVisible(), false, "no All mail button");
    // The start page explains itself and offers the mailbox box; nothing is watched, so
    // the live indicator is not shown (it never says "offline" on a healthy server).
    await p.locator("#intro").waitFor();
    assert.match(await p.textContent("#intro"), /type the\s+address to read the mail sent to it/);
    assert.equal(await p.locator("#status").isVisible(), false, "no live indicator on the start page");
    assert.equal(await p.locator("#message-list li").count(), 0, "no mail shown before an address");
    fs.mkdirSync(shots, { recursive: true });
    await p.screenshot({ path: path.join(shots, "landing-public.png") });
    await p.fill("#intro-input", "dave@example.test");
    await p.press("#intro-input", "Enter");
    await p.locator("#message-list li[data-id]", { hasText: "Public hello" }).waitFor();
    await p.locator("#status.live").waitFor();
    assert.equal(new URL(p.url()).hash, "#/dave@example.test");
    // Searching all mail is not open: the page says how to search one mailbox.
    await p.goto(pbase + "/");
    await p.locator("#intro").waitFor();
    await p.fill("#search-input", "hello");
    await p.press("#search-input", "Enter");
    await p.locator("#error:not([hidden])").waitFor();
    assert.match(await p.textContent("#error"), /add mailbox:<address>/);
    await p.fill("#search-input", "mailbox:dave@example.test hello");
    await p.press("#search-input", "Enter");
    await p.locator("#message-list li[data-id]", { hasText: "Public hello" }).waitFor();
    await p.goto(pbase + "/");
    await p.locator("#intro").waitFor();
    // A bookmarked #all does not open all mail.
    await p.goto(pbase + "/#all");
    await p.locator("#error:not([hidden])").waitFor();
    assert.match(await p.textContent("#error"), /not open to you/);
    assert.equal(await p.textContent("#list-title"), "Read a mailbox");
    // One mailbox by its address works, live, without a delete button.
    await openMailbox(p, "dave@example.test");
    await p.locator("#message-list li[data-id]", { hasText: "Public hello" }).click();
    await p.locator("#message-view").waitFor({ state: "visible" });
    assert.equal(await p.locator("#delete-message").isVisible(), false, "no delete button");
    assert.equal(await p.locator("#delete-mailbox").isVisible(), false);
    await sendMail("dave@example.test", ["Subject: Second public", "", "hi"], smtp);
    await p.locator("#message-list li[data-id]", { hasText: "Second public" }).waitFor();
    fs.mkdirSync(shots, { recursive: true });
    await p.screenshot({ path: path.join(shots, "inbox-public.png") });
  } finally {
    await p.close();
    await pub.stop();
  }
});

test("the message view shows what the policy checks recorded", { timeout: 30_000 }, async () => {
  // A name server that never answers: SPF and DMARC are recorded as temperror, quickly.
  const dns = dgram.createSocket("udp4");
  await new Promise((r) => dns.bind(0, "127.0.0.1", r));
  const srv = await startIntake({
    INTAKE_LOG__LEVEL: "error",
    INTAKE_SENDER_AUTH__ENABLED: "true",
    INTAKE_DNS__SERVERS: `["127.0.0.1:${dns.address().port}"]`,
    INTAKE_DNS__TIMEOUT: "200ms",
    INTAKE_DNS__ATTEMPTS: "1",
  }, "intake-browser-checks-");
  const { smtp, http: httpP } = srv;
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  p.setDefaultTimeout(WAIT);
  try {
    await sendMail("erin@example.test", ["From: Frank <frank@example.net>", "Subject: Checked hello", "", "hi"], smtp);
    await p.goto(`http://127.0.0.1:${httpP}/`);
    await openMailbox(p, "erin@example.test");
    await p.locator("#message-list li[data-id]", { hasText: "Checked hello" }).click();
    await p.locator("#message-view").waitFor({ state: "visible" });
    const meta = await p.textContent("#view-meta");
    assert.match(meta, /Authentication/);
    assert.match(meta, /SPF temperror/);
    assert.match(meta, /DKIM none/);
    await p.click("#tab-headers");
    await p.locator("#view-headers th", { hasText: /^Authentication-Results$/ }).waitFor();
    assert.deepEqual(await cspViolations(p), []);
  } finally {
    await p.close();
    dns.close();
    await srv.stop();
  }
});
