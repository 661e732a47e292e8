// What the browser tests of Intake's web inbox share: an Intake of their own (INTAKE_BIN) on
// free loopback ports (its Mailpit listener too, so that mail with an X-Tags header arrives
// tagged), a "remote" image server that records its requests, Debian's headless
// Chromium (playwright-core) with one page, a tiny SMTP client, and bounded waits. A test
// file calls setup() once. Everything is bounded: each wait has a timeout and a watchdog
// ends the run after 90 s.
import { before, after } from "node:test";
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
export const bin = path.resolve(root, process.env.INTAKE_BIN || "target/debug/intake");
export const shots = path.resolve(process.env.SCREENSHOT_DIR || path.join(here, "out"));
export const WAIT = 10_000; // any single wait

let intake, smtpPort, httpPort;
export let browser, page, base, tracker;
export const trackerHits = [];
export const consoleLines = [];

// The whole run is bounded, whatever hangs.
const watchdog = setTimeout(() => {
  console.error("browser test: watchdog fired after 90 s");
  if (intake) intake.proc.kill("SIGKILL");
  process.exit(1);
}, 90_000);
watchdog.unref();

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/// `intake serve` of its own: free SMTP and HTTP ports, a fresh data folder and `extra`
/// settings (INTAKE_* variables). `exit` says how it ended, if it did; `stop()` ends it
/// (SIGTERM, SIGKILL after 5 s) and removes its folder.
export async function startIntake(extra = {}, label = "intake-browser-") {
  const s = { smtp: await freePort(), http: await freePort(), exit: null };
  s.dir = fs.mkdtempSync(path.join(os.tmpdir(), label));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_") && k !== "RUST_LOG"));
  s.proc = spawn(bin, ["serve"], {
    cwd: s.dir,
    env: {
      ...env,
      INTAKE_SMTP__LISTEN: `127.0.0.1:${s.smtp}`,
      INTAKE_HTTP__LISTEN: `127.0.0.1:${s.http}`,
      INTAKE_STORE__PATH: s.dir,
      INTAKE_LOG__LEVEL: "warn",
      ...extra,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  s.proc.on("exit", (code, sig) => { s.exit = sig || `code ${code}`; });
  s.stop = async () => {
    if (!s.exit) {
      const gone = new Promise((r) => s.proc.once("exit", r));
      s.proc.kill("SIGTERM");
      const t = setTimeout(() => s.proc.kill("SIGKILL"), 5_000);
      await gone;
      clearTimeout(t);
    }
    fs.rmSync(s.dir, { recursive: true, force: true });
  };
  // Intake binds SMTP after HTTP (and POP3): once SMTP accepts, every port does.
  await waitPort(s.smtp, 15_000, () => s.exit);
  return s;
}

async function waitPort(port, ms, exited = () => intake && intake.exit) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (exited()) throw new Error(`intake exited early (${exited()}); is INTAKE_BIN=${bin} right?`);
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

export async function until(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A tiny SMTP client: one command at a time, exact CRLF, dot-stuffing, every reply code
// checked. Resolves with the id from "250 ... stored as <id>".
export function sendMail(to, lines, port = smtpPort) {
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

export async function apiJSON(p, opts) {
  const r = await fetch(base + p, { ...opts, signal: AbortSignal.timeout(WAIT) });
  assert.ok(r.ok, `${p}: ${r.status}`);
  return r.status === 204 ? null : r.json();
}

export const items = () => page.locator("#message-list li[data-id]");
export const item = (subject) => page.locator("#message-list li[data-id]", { hasText: subject });

export async function openMailbox(p, name) {
  await p.fill("#mailbox-input", name);
  await p.press("#mailbox-input", "Enter");
  await p.locator("#status.live").waitFor();
}

// The page obeys its own CSP: violations in the top document are recorded by an init script
// (which runs outside the page's CSP) and must stay empty.
export async function cspViolations(p) {
  return p.evaluate(() => window.__csp || []);
}

/// Starts Intake, the image server and the browser before the file's tests; stops them after.
export function setup() {
before(async () => {
  assert.ok(fs.existsSync(bin), `no intake binary at ${bin} (set INTAKE_BIN)`);
  const mailpitPort = await freePort();
  intake = await startIntake({
    INTAKE_MAILPIT__LISTEN: `127.0.0.1:${mailpitPort}`,
    // The inbox's Link check tab (checks.test.mjs), for servers on 127.0.0.1 only.
    INTAKE_MAILPIT__LINK_CHECK: "true",
    INTAKE_MAILPIT__LINK_CHECK_ALLOW: '["127.0.0.1/32"]',
  });
  smtpPort = intake.smtp;
  httpPort = intake.http;
  base = `http://127.0.0.1:${httpPort}`;

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
  if (intake) await intake.stop();
  clearTimeout(watchdog);
}, { timeout: 15_000 });
}
