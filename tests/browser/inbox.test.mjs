// Browser test of Intake's web inbox, in Debian's headless Chromium driven by playwright-core.
// Starts its own Intake (INTAKE_BIN), sends mail over real SMTP, and checks what a person sees:
// new mail appears without reloading, a message opens and can be deleted, and a hostile HTML
// message neither runs script nor loads a remote image until the reader asks for images.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = process.env.INTAKE_BIN ? path.resolve(process.env.INTAKE_BIN) : path.join(root, "target/debug/intake");
const shots = path.resolve(process.env.SCREENSHOT_DIR || path.join(here, "out"));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on("error", reject);
  });
}

async function waitPort(port, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise((res) => {
      const c = net.connect(port, "127.0.0.1", () => { c.end(); res(true); });
      c.on("error", () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port} after ${ms} ms`);
}

// A tiny SMTP client: exact CRLF, one command at a time, checks every reply code.
function sendMail(port, to, content) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    const steps = [
      [null, 220], ["EHLO browser.test", 250], ["MAIL FROM:<sender@example.net>", 250],
      [`RCPT TO:<${to}>`, 250], ["DATA", 354], [content.replace(/\r?\n/g, "\r\n") + "\r\n.", 250], ["QUIT", 221],
    ];
    let buf = "";
    let i = 0;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error("SMTP timeout")); }, 10000);
    const next = () => {
      if (i >= steps.length) { clearTimeout(timer); sock.end(); resolve(); return; }
      if (steps[i][0] !== null) sock.write(steps[i][0] + "\r\n");
    };
    sock.on("data", (d) => {
      buf += d.toString();
      // A complete reply: its last line has a space after the code.
      const lines = buf.split("\r\n");
      const done = lines.slice(0, -1).find((l) => /^\d{3} /.test(l));
      if (!done) return;
      buf = "";
      const code = Number(done.slice(0, 3));
      if (code !== steps[i][1]) { clearTimeout(timer); sock.destroy(); reject(new Error(`SMTP: expected ${steps[i][1]}, got ${done}`)); return; }
      i += 1;
      next();
    });
    sock.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}

let intake, browser, page, smtpPort, httpPort, tracker, trackerHits = 0, dataDir;

before(async () => {
  smtpPort = await freePort();
  httpPort = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-browser-"));
  intake = spawn(bin, ["serve"], {
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_"))), INTAKE_SMTP__LISTEN: `127.0.0.1:${smtpPort}`, INTAKE_HTTP__LISTEN: `127.0.0.1:${httpPort}`,
           INTAKE_STORE__PATH: dataDir, INTAKE_LOG__LEVEL: "warn" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitPort(smtpPort, 15000);
  await waitPort(httpPort, 15000);
  // A "remote" image server on loopback: it counts every request.
  tracker = http.createServer((req, res) => { trackerHits += 1; res.writeHead(200, { "Content-Type": "image/png" }); res.end(); });
  await new Promise((r) => tracker.listen(0, "127.0.0.1", r));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(10000);
});

after(async () => {
  if (browser) await browser.close();
  if (tracker) tracker.close();
  if (intake) intake.kill("SIGTERM");
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test("new mail appears live, opens, and is deleted", async () => {
  await page.goto(`http://127.0.0.1:${httpPort}/`);
  await page.fill("#mailbox-input", "alice@example.test");
  await page.press("#mailbox-input", "Enter");
  await page.waitForSelector("#status.live");
  await sendMail(smtpPort, "alice@example.test", "From: Bob <bob@example.net>\nSubject: Live hello\n\nHello from the browser test.");
  const item = page.locator("#message-list li[data-id]", { hasText: "Live hello" });
  await item.waitFor();
  await item.click();
  await page.waitForSelector("#message-view:not([hidden])");
  assert.equal(await page.textContent("#view-subject"), "Live hello");
  await page.click(".tabs [data-tab=text]");
  assert.match(await page.textContent("#view-text"), /Hello from the browser test\./);
  fs.mkdirSync(shots, { recursive: true });
  const shot = path.join(shots, "inbox.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  await page.click("#delete-message");
  await page.locator("#message-list li[data-id]", { hasText: "Live hello" }).waitFor({ state: "detached" });
  const r = await fetch(`http://127.0.0.1:${httpPort}/api/v1/mailboxes/alice@example.test/messages`);
  assert.equal((await r.json()).total, 0, "deleted in the store too");
});

test("hostile HTML neither runs script nor loads remote images", async () => {
  const trackerUrl = `http://127.0.0.1:${tracker.address().port}/tracker.png`;
  const html = [
    "From: attacker@example.net", "Subject: Hostile", "Content-Type: text/html; charset=utf-8", "",
    "<p>Innocent text</p>",
    "<script>try{parent.document.title='pwned'}catch(e){} window.top.pwned=1; document.body.dataset.ran=1;</script>",
    "<img src=x onerror=\"try{parent.document.title='pwned'}catch(e){} window.top.pwned=1\">",
    `<img src="${trackerUrl}" alt="tracker">`,
  ].join("\n");
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(m.text()));
  await page.fill("#mailbox-input", "victim@example.test");
  await page.press("#mailbox-input", "Enter");
  await page.waitForSelector("#status.live");
  await sendMail(smtpPort, "victim@example.test", html);
  const item = page.locator("#message-list li[data-id]", { hasText: "Hostile" });
  await item.waitFor();
  await item.click();
  const frame = page.frameLocator("#html-frame");
  await frame.locator("text=Innocent text").waitFor();
  await page.waitForTimeout(1000);
  assert.notEqual(await page.title(), "pwned", "no script reached the page");
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  const ran = await frame.locator("body").getAttribute("data-ran");
  assert.equal(ran, null, "no script ran inside the frame");
  assert.equal(trackerHits, 0, "the remote image was not fetched");
  // Asking for images loads them: the test can see a fetch when there is one.
  await page.click("#show-images");
  const end = Date.now() + 5000;
  while (trackerHits === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  assert.ok(trackerHits > 0, "after 'Show remote images' the image is fetched");
  assert.notEqual(await page.title(), "pwned");
  assert.ok(!consoleLines.some((l) => l.includes("pwned")));
});
