// Mailpit's npm client (mailpit-api) against the Mailpit routes that reach beyond the store:
// chaos triggers (answered over real SMTP), release and sendMessage through a real downstream
// (a second Intake, read back with the same client), SpamAssassin through a real spamd.
// Starts its own processes on free loopback ports; every wait is bounded.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { MailpitClient } from "mailpit-api";
import { freePort, waitPort } from "./support.mjs";

const bin = process.env.INTAKE_BIN;
const children = [];
const dirs = [];
let smtpPort, mailpit, downstream;

// spamd takes a while to load its rules; everything else is quick.
const watchdog = setTimeout(() => { for (const c of children) c.kill("SIGKILL"); process.exit(1); }, 170_000);
watchdog.unref();

// An Intake of its own: its SMTP port and a Mailpit client for it.
async function intake(extraEnv) {
  const smtp = await freePort(), http = await freePort(), api = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-mailpit-extras-"));
  dirs.push(dir);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_")));
  const child = spawn(bin, ["serve"], {
    env: { ...env, INTAKE_SMTP__LISTEN: `127.0.0.1:${smtp}`, INTAKE_HTTP__LISTEN: `127.0.0.1:${http}`,
      INTAKE_MAILPIT__LISTEN: `127.0.0.1:${api}`, INTAKE_STORE__PATH: dir, INTAKE_LOG__LEVEL: "warn", ...extraEnv },
    stdio: ["ignore", "ignore", "inherit"],
  });
  children.push(child);
  await waitPort(smtp, child);
  await waitPort(api, child);
  return { smtp, client: new MailpitClient(`http://127.0.0.1:${api}`) };
}

// An SMTP dialogue: each line sent, the code of each reply (the greeting first).
function dialogue(port, lines) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    const codes = [];
    let buf = "";
    const t = setTimeout(() => { s.destroy(); reject(new Error("SMTP timeout")); }, 10_000);
    s.on("data", (d) => {
      buf += d.toString("latin1");
      let line;
      while ((line = buf.split("\r\n").slice(0, -1).find((l) => /^\d{3} /.test(l)))) {
        buf = buf.slice(buf.indexOf(line) + line.length + 2);
        codes.push(line);
        const next = lines[codes.length - 1];
        if (next === undefined) { clearTimeout(t); s.end(); resolve(codes); return; }
        s.write(next + "\r\n");
      }
    });
    s.on("error", reject);
  });
}

function mail(to, subject, body) {
  const data = [`From: App <app@example.net>`, `To: ${to}`, `Subject: ${subject}`, "", body].join("\r\n");
  return dialogue(smtpPort, ["EHLO t", "MAIL FROM:<app@example.net>", `RCPT TO:<${to}>`, "DATA", `${data}\r\n.`, "QUIT"]);
}

before(async () => {
  assert.ok(bin && fs.existsSync(bin), `INTAKE_BIN (${bin}) is the intake binary`);
  downstream = await intake({});
  const spamdBin = ["/usr/sbin/spamd", "/usr/bin/spamd"].find((p) => fs.existsSync(p));
  assert.ok(spamdBin, "spamd is installed (apt-get install spamd spamassassin)");
  const spamdPort = await freePort();
  const spamdDir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-spamd-"));
  dirs.push(spamdDir);
  children.push(spawn(spamdBin, [`--listen=127.0.0.1:${spamdPort}`, "--allowed-ips=127.0.0.1", "--max-children=1",
    "--min-children=1", "--nouser-config", "-u", "nobody", `--syslog=${spamdDir}/spamd.log`,
    `--pidfile=${spamdDir}/spamd.pid`], { stdio: "ignore" }));
  const main = await intake({
    INTAKE_MAILPIT__CHAOS: "true", INTAKE_MAILPIT__RELEASE: "true",
    INTAKE_RELAY__SERVER: `127.0.0.1:${downstream.smtp}`, INTAKE_DELIVERY__TARGETS: '["store", "relay"]',
    INTAKE_SPAMD__ENABLED: "true", INTAKE_SPAMD__ADDRESS: `127.0.0.1:${spamdPort}`, INTAKE_SPAMD__ON_ERROR: "pass",
  });
  smtpPort = main.smtp;
  mailpit = main.client;
});

after(async () => {
  for (const c of children.reverse()) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once("exit", r));
      c.kill("SIGTERM");
      await gone;
    }
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  clearTimeout(watchdog);
});

test("chaos triggers: read, set (omitted ones reset), answered over SMTP, reset", async () => {
  assert.deepEqual(await mailpit.getChaosTriggers(), {
    Sender: { ErrorCode: 451, Probability: 0 }, Recipient: { ErrorCode: 451, Probability: 0 },
    Authentication: { ErrorCode: 535, Probability: 0 },
  });
  assert.equal((await mailpit.getConfiguration()).ChaosEnabled, true);
  const set = await mailpit.setChaosTriggers({ Sender: { ErrorCode: 421, Probability: 100 } });
  assert.deepEqual(set.Sender, { ErrorCode: 421, Probability: 100 });
  let codes = await dialogue(smtpPort, ["EHLO t", "MAIL FROM:<a@example.net>", "QUIT"]);
  assert.equal(codes[2], "421 Chaos sender error");
  const now = await mailpit.setChaosTriggers({ Recipient: { ErrorCode: 550, Probability: 100 } });
  assert.deepEqual(now.Sender, { ErrorCode: 451, Probability: 0 }, "left out: reset");
  codes = await dialogue(smtpPort, ["EHLO t", "MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "QUIT"]);
  assert.match(codes[2], /^250 /);
  assert.equal(codes[3], "550 Chaos recipient error");
  await assert.rejects(mailpit.setChaosTriggers({ Sender: { ErrorCode: 200, Probability: 5 } }), /400/);
  assert.deepEqual((await mailpit.setChaosTriggers()).Recipient, { ErrorCode: 451, Probability: 0 });
  codes = await mail("b@example.test", "after chaos", "calm");
  assert.match(codes[5], /^250 /, "accepted once reset");
});

test("releaseMessage sends a caught message to the relay downstream", async () => {
  await mail("dev@example.test", "Release me", "to be released");
  const caught = await mailpit.waitForMessage({ query: 'subject:"Release me"' }, { timeout: 5000, interval: 100 });
  assert.equal(await mailpit.releaseMessage(caught.ID, { To: ["carol@example.test"] }), "ok");
  const there = await downstream.client.waitForMessage({ query: "to:carol@example.test" }, { timeout: 5000, interval: 100 });
  assert.equal(there.Subject, "Release me");
  assert.notEqual(there.MessageID, caught.MessageID, "released with a new Message-ID, as Mailpit");
  await assert.rejects(mailpit.releaseMessage(caught.ID, { To: ["not an address"] }), /400/);
  const ui = await mailpit.getConfiguration();
  assert.equal(ui.MessageRelay.Enabled, true);
  assert.equal(ui.MessageRelay.SMTPServer, `127.0.0.1:${downstream.smtp}`);
});

test("sendMessage goes through the delivery targets: stored here and relayed", async () => {
  const sent = await mailpit.sendMessage({
    From: { Email: "api@example.net" }, To: [{ Email: "ivy@example.test", Name: "Ivy" }],
    Subject: "Injected and relayed", Text: "through the targets",
  });
  assert.equal((await mailpit.getMessageSummary(sent.ID)).Subject, "Injected and relayed");
  const there = await downstream.client.waitForMessage({ query: "to:ivy@example.test" }, { timeout: 5000, interval: 100 });
  assert.match(there.Text, /through the targets/);
});

test("spamAssassinCheck reports spamd's verdict and rules", async () => {
  await mail("spam@example.test", "Cheap offer", "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X");
  const msg = await mailpit.waitForMessage({ query: 'subject:"Cheap offer"' }, { timeout: 5000, interval: 100 });
  assert.equal((await mailpit.getConfiguration()).SpamAssassin, true);
  // Until spamd has loaded its rules and listens, the answer carries an Error.
  const end = Date.now() + 150_000;
  let sa;
  for (;;) {
    sa = await mailpit.spamAssassinCheck(msg.ID);
    if (sa.Error === "") break;
    assert.equal(sa.Rules, null);
    assert.ok(Date.now() < end, `spamd never answered: ${sa.Error}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(sa.IsSpam, true);
  assert.ok(sa.Score >= 1000, String(sa.Score));
  const gtube = sa.Rules.find((r) => r.Name === "GTUBE");
  assert.ok(gtube, JSON.stringify(sa.Rules));
  assert.equal(gtube.Score, 1000);
  assert.match(gtube.Description, /Generic Test/);
});
