// Browser test of Intake's web inbox, in Debian's headless Chromium driven by playwright-core.
// Starts its own Intake (INTAKE_BIN) on free loopback ports, sends mail over real SMTP, and
// checks what a person sees: new mail appears without reloading, a message opens (text,
// headers, source) and can be deleted, the URL can be bookmarked, the keyboard works, and a
// hostile HTML message neither runs script nor loads a remote image until the reader asks.
// Everything is bounded: each wait has a timeout and a watchdog ends the run after 120 s.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import http from "node:http";
import dgram from "node:dgram";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = path.resolve(root, process.env.INTAKE_BIN || "target/debug/intake");
const shots = path.resolve(process.env.SCREENSHOT_DIR || path.join(here, "out"));
const WAIT = 10_000; // any single wait

let intake, intakeExit, browser, page, smtpPort, httpPort, base, tracker, dataDir;
const trackerHits = [];
const consoleLines = [];

// The whole run is bounded, whatever hangs.
const watchdog = setTimeout(() => {
  console.error("browser test: watchdog fired after 120 s");
  if (intake) intake.kill("SIGKILL");
  process.exit(1);
}, 120_000);
watchdog.unref();

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

async function waitPort(port, ms, exited = () => intakeExit) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (exited()) throw new Error(`intake exited early (${intakeExit}); is INTAKE_BIN=${bin} right?`);
    const ok = await new Promise((res) => {
      const c = net.connect(port, "127.0.0.1", () => { c.end(); res(true); });
      c.on("error", () => res(false));
      c.setTimeout(1000, () => { c.destroy(); res(false); });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
}

async function until(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A tiny SMTP client: one command at a time, exact CRLF, dot-stuffing, every reply code
// checked. Resolves with the id from "250 ... stored as <id>".
function sendMail(to, lines, port = smtpPort) {
  const body = lines.map((l) => (l.startsWith(".") ? "." + l : l)).join("\r\n");
  const steps = [
    [null, 220], ["EHLO browser.test", 250], ["MAIL FROM:<sender@example.net>", 250],
    [`RCPT TO:<${to}>`, 250], ["DATA", 354], [body + "\r\n.", 250], ["QUIT", 221],
  ];
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    let buf = "";
    let i = 0;
    let id = null;
    const fail = (e) => { clearTimeout(timer); sock.destroy(); reject(e); };
    const timer = setTimeout(() => fail(new Error(`SMTP timeout at step ${i}`)), WAIT);
    sock.on("data", (d) => {
      buf += d.toString("latin1");
      // A reply is complete when a line has a space after the code.
      const lines = buf.split("\r\n");
      const last = lines.slice(0, -1).find((l) => /^\d{3} /.test(l));
      if (!last) return;
      buf = "";
      const code = Number(last.slice(0, 3));
      if (code !== steps[i][1]) { fail(new Error(`SMTP: after ${steps[i][0] || "connect"} expected ${steps[i][1]}, got ${last}`)); return; }
      if (steps[i][0] && steps[i][0].endsWith("\r\n.")) id = (/([0-9a-f]{8}-[0-9a-f-]{27})/i.exec(last) || [])[1] || null;
      i += 1;
      if (i === steps.length) { clearTimeout(timer); sock.end(); resolve(id); return; }
      sock.write(steps[i][0] + "\r\n");
    });
    sock.on("error", fail);
  });
}

async function apiJSON(p, opts) {
  const r = await fetch(base + p, { ...opts, signal: AbortSignal.timeout(WAIT) });
  assert.ok(r.ok, `${p}: ${r.status}`);
  return r.status === 204 ? null : r.json();
}

const items = () => page.locator("#message-list li[data-id]");
const item = (subject) => page.locator("#message-list li[data-id]", { hasText: subject });

async function openMailbox(p, name) {
  await p.fill("#mailbox-input", name);
  await p.press("#mailbox-input", "Enter");
  await p.locator("#status.live").waitFor();
}

// The page obeys its own CSP: violations in the top document are recorded by an init script
// (which runs outside the page's CSP) and must stay empty.
async function cspViolations(p) {
  return p.evaluate(() => window.__csp || []);
}

before(async () => {
  smtpPort = await freePort();
  httpPort = await freePort();
  base = `http://127.0.0.1:${httpPort}`;
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-browser-"));
  assert.ok(fs.existsSync(bin), `no intake binary at ${bin} (set INTAKE_BIN)`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_") && k !== "RUST_LOG"));
  intake = spawn(bin, ["serve"], {
    cwd: dataDir,
    env: {
      ...env,
      INTAKE_SMTP__LISTEN: `127.0.0.1:${smtpPort}`,
      INTAKE_HTTP__LISTEN: `127.0.0.1:${httpPort}`,
      INTAKE_STORE__PATH: dataDir,
      INTAKE_LOG__LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  intake.on("exit", (code, sig) => { intakeExit = sig || `code ${code}`; });
  await waitPort(smtpPort, 15_000);
  await waitPort(httpPort, 15_000);

  // A "remote" image server on loopback: it records every request.
  tracker = http.createServer((req, res) => {
    trackerHits.push(req.url);
    res.writeHead(200, { "Content-Type": "image/gif", "Cache-Control": "no-store" });
    res.end(Buffer.from("R0lGODlhAQABAAAAACwAAAAAAQABAAACAkQBADs=", "base64"));
  });
  await new Promise((r) => tracker.listen(0, "127.0.0.1", r));

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 20_000,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript(() => {
    if (window !== window.top) return;
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.setDefaultNavigationTimeout(WAIT);
  page.on("console", (m) => consoleLines.push(m.text()));
  page.on("pageerror", (e) => consoleLines.push("pageerror: " + e.message));
}, { timeout: 40_000 });

after(async () => {
  try { if (browser) await browser.close(); } catch (_) { /* already gone */ }
  if (tracker) tracker.close();
  if (intake && !intakeExit) {
    const exited = new Promise((r) => intake.once("exit", r));
    intake.kill("SIGTERM");
    const t = setTimeout(() => intake.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(t);
  }
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}, { timeout: 15_000 });

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

test("in public mode the page offers one mailbox, not all mail, and hides deletes", { timeout: 20_000 }, async () => {
  const smtp = await freePort();
  const httpP = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-browser-public-"));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_") && k !== "RUST_LOG"));
  let exited = null;
  const pub = spawn(bin, ["serve"], {
    cwd: dir,
    env: {
      ...env,
      INTAKE_SMTP__LISTEN: `127.0.0.1:${smtp}`,
      INTAKE_HTTP__LISTEN: `127.0.0.1:${httpP}`,
      INTAKE_STORE__PATH: dir,
      INTAKE_LOG__LEVEL: "warn",
      INTAKE_HTTP__ACCESS: "public",
      INTAKE_HTTP__PUBLIC_DELETE: "false",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  pub.on("exit", (code, sig) => { exited = sig || `code ${code}`; });
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  p.setDefaultTimeout(WAIT);
  try {
    await waitPort(httpP, 15_000, () => exited);
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
    if (!exited) {
      const gone = new Promise((r) => pub.once("exit", r));
      pub.kill("SIGTERM");
      const t = setTimeout(() => pub.kill("SIGKILL"), 5_000);
      await gone;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the message view shows what the policy checks recorded", { timeout: 30_000 }, async () => {
  const smtp = await freePort();
  const httpP = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-browser-checks-"));
  // A name server that never answers: SPF and DMARC are recorded as temperror, quickly.
  const dns = dgram.createSocket("udp4");
  await new Promise((r) => dns.bind(0, "127.0.0.1", r));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_") && k !== "RUST_LOG"));
  let exited = null;
  const srv = spawn(bin, ["serve"], {
    cwd: dir,
    env: {
      ...env,
      INTAKE_SMTP__LISTEN: `127.0.0.1:${smtp}`,
      INTAKE_HTTP__LISTEN: `127.0.0.1:${httpP}`,
      INTAKE_STORE__PATH: dir,
      INTAKE_LOG__LEVEL: "error",
      INTAKE_SENDER_AUTH__ENABLED: "true",
      INTAKE_DNS__SERVERS: `["127.0.0.1:${dns.address().port}"]`,
      INTAKE_DNS__TIMEOUT: "200ms",
      INTAKE_DNS__ATTEMPTS: "1",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  srv.on("exit", (code, sig) => { exited = sig || `code ${code}`; });
  const p = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  p.setDefaultTimeout(WAIT);
  try {
    await waitPort(httpP, 15_000, () => exited);
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
    if (!exited) {
      const gone = new Promise((r) => srv.once("exit", r));
      srv.kill("SIGTERM");
      const t = setTimeout(() => srv.kill("SIGKILL"), 5_000);
      await gone;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// A 1x1 PNG, shown 120x40 so that a screenshot shows it.
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

test("the start page shows the latest mail, live, in open mode", { timeout: 20_000 }, async () => {
  await sendMail("frank@example.test", ["From: a@example.net", "Subject: For Frank", "", "f"]);
  await page.goto(base + "/");
  await page.locator("#status.live").waitFor();
  assert.equal(await page.textContent("#list-title"), "Latest mail");
  assert.equal(await page.locator("#intro").isVisible(), false);
  assert.equal(new URL(page.url()).hash, "", "the start page keeps its address");
  await item("For Frank").waitFor();
  await item("To Dave").waitFor(); // another mailbox's mail
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
