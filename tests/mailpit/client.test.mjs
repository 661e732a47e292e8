// Mailpit's own npm client (mailpit-api) against Intake's Mailpit-compatible listener: what a
// test suite written for Mailpit does. Starts its own Intake (INTAKE_BIN) on free loopback
// ports, sends mail over real SMTP. Bounded: every wait has a timeout, a watchdog ends the run.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import http from "node:http";
import { MailpitClient } from "mailpit-api";
import { freePort, waitPort } from "./support.mjs";

const bin = process.env.INTAKE_BIN;
let intake, exited, smtpPort, mailpitPort, dataDir, mailpit;
// The link check's targets: a web server on 127.0.0.1 (allowed below) and one on 127.0.0.2,
// loopback too but not allowed, that must see no request.
let web, webPort, elsewhere, elsewherePort;
const elsewhereSeen = [];

const watchdog = setTimeout(() => { if (intake) intake.kill("SIGKILL"); process.exit(1); }, 60_000);
watchdog.unref();

// One message over SMTP, every reply checked.
function send(to, subject, body, extra = [], rcpts = [to]) {
  const data = [`From: Sender Name <sender@example.net>`, `To: ${to}`, `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, "")}@example.net>`, ...extra, "", body].join("\r\n");
  const steps = [[null, 220], ["EHLO t", 250], ["MAIL FROM:<sender@example.net>", 250],
    ...rcpts.map((r) => [`RCPT TO:<${r}>`, 250]), ["DATA", 354], [data + "\r\n.", 250], ["QUIT", 221]];
  return new Promise((resolve, reject) => {
    const s = net.connect(smtpPort, "127.0.0.1");
    let buf = "", i = 0;
    const t = setTimeout(() => { s.destroy(); reject(new Error("SMTP timeout")); }, 10_000);
    s.on("data", (d) => {
      buf += d.toString("latin1");
      const line = buf.split("\r\n").slice(0, -1).find((l) => /^\d{3} /.test(l));
      if (!line) return;
      buf = "";
      if (Number(line.slice(0, 3)) !== steps[i][1]) { clearTimeout(t); s.destroy(); reject(new Error(line)); return; }
      i += 1;
      if (i === steps.length) { clearTimeout(t); s.end(); resolve(); return; }
      s.write(steps[i][0] + "\r\n");
    });
    s.on("error", reject);
  });
}

function listen(server, host) {
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, host, () => resolve(server.address().port));
  });
}

before(async () => {
  assert.ok(bin && fs.existsSync(bin), `INTAKE_BIN (${bin}) is the intake binary`);
  elsewhere = http.createServer((req, res) => { elsewhereSeen.push(req.url); res.end(); });
  elsewherePort = await listen(elsewhere, "127.0.0.2");
  web = http.createServer((req, res) => {
    const to = { "/to-ok": "/ok", "/away": `http://127.0.0.2:${elsewherePort}/secret` }[req.url];
    if (req.method !== "HEAD") res.writeHead(405);
    else if (req.url === "/ok") res.writeHead(200);
    else if (to) res.writeHead(302, { Location: to });
    else res.writeHead(404);
    res.end();
  });
  webPort = await listen(web, "127.0.0.1");
  smtpPort = await freePort();
  mailpitPort = await freePort();
  const httpPort = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "intake-mailpit-"));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("INTAKE_")));
  intake = spawn(bin, ["serve"], {
    env: { ...env, INTAKE_SMTP__LISTEN: `127.0.0.1:${smtpPort}`, INTAKE_HTTP__LISTEN: `127.0.0.1:${httpPort}`,
      INTAKE_MAILPIT__LISTEN: `127.0.0.1:${mailpitPort}`, INTAKE_STORE__PATH: dataDir, INTAKE_LOG__LEVEL: "warn",
      INTAKE_MAILPIT__LINK_CHECK: "true", INTAKE_MAILPIT__LINK_CHECK_ALLOW: '["127.0.0.1/32"]' },
    stdio: ["ignore", "ignore", "inherit"],
  });
  intake.on("exit", (c, s) => { exited = s || `code ${c}`; });
  await waitPort(smtpPort, intake);
  await waitPort(mailpitPort, intake);
  mailpit = new MailpitClient(`http://127.0.0.1:${mailpitPort}`);
});

after(async () => {
  if (intake && !exited) {
    const gone = new Promise((r) => intake.once("exit", r));
    intake.kill("SIGTERM");
    await gone;
  }
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  for (const s of [web, elsewhere]) if (s) s.close();
  clearTimeout(watchdog);
});

test("a Mailpit test suite's round trip: send, list, search, wait, read, headers, source, delete all", async () => {
  const info = await mailpit.getInfo();
  assert.equal(info.Messages, 0);
  await send("alice@example.test", "Welcome aboard", "Hello Alice, click to confirm.");
  await send("bob@example.test", "Password reset", "Your code is 424242.");

  const list = await mailpit.listMessages();
  assert.equal(list.total, 2);
  assert.equal(list.messages_count, 2);
  assert.equal(list.unread, 2);
  assert.equal(list.start, 0);
  const newest = list.messages[0];
  assert.equal(newest.Subject, "Password reset");
  assert.deepEqual(newest.From, { Name: "Sender Name", Address: "sender@example.net" });
  assert.deepEqual(newest.To, [{ Name: "", Address: "bob@example.test" }]);
  assert.equal(newest.Read, false);
  assert.equal(newest.MessageID, "Passwordreset@example.net");
  assert.match(newest.Snippet, /424242/);
  assert.ok(!Number.isNaN(Date.parse(newest.Created)));

  const found = await mailpit.searchMessages({ query: "subject:Welcome" });
  assert.equal(found.messages_count, 1);
  assert.equal(found.messages[0].To[0].Address, "alice@example.test");

  const msg = await mailpit.waitForMessage({ query: "to:bob@example.test" }, { timeout: 5000, interval: 100 });
  assert.equal(msg.Subject, "Password reset");
  assert.match(msg.Text, /424242/);
  assert.equal(msg.Read, true);
  assert.equal((await mailpit.listMessages()).unread, 1, "opening a message marks it read");

  const latest = await mailpit.getMessageSummary();
  assert.equal(latest.ID, newest.ID, "latest is the newest message");
  const headers = await mailpit.getMessageHeaders(newest.ID);
  assert.deepEqual(headers.Subject, ["Password reset"]);
  const source = await mailpit.getMessageSource(newest.ID);
  assert.match(source, /^Received: /);
  assert.match(source, /Your code is 424242\./);
  assert.match(await mailpit.renderMessageText(newest.ID), /424242/);

  await mailpit.setReadStatus({ Read: true });
  assert.equal((await mailpit.listMessages()).unread, 0);
  await mailpit.setReadStatus({ IDs: [newest.ID], Read: false });
  assert.equal((await mailpit.listMessages()).unread, 1);

  await mailpit.deleteMessagesBySearch({ query: "subject:Welcome" });
  assert.equal((await mailpit.listMessages()).total, 1);
  await mailpit.deleteMessages();
  assert.equal((await mailpit.listMessages()).total, 0);
});

test("attachments are listed and downloaded by PartID", async () => {
  const boundary = "b1";
  await send("carol@example.test", "With file", [
    `--${boundary}`, "Content-Type: text/plain", "", "see attached", `--${boundary}`,
    "Content-Type: text/csv; name=report.csv", "Content-Disposition: attachment; filename=report.csv", "",
    "a,b", "1,2", `--${boundary}--`].join("\r\n"),
    ["MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary=${boundary}`]);
  const msg = await mailpit.waitForMessage({ query: "subject:\"With file\"" }, { timeout: 5000, interval: 100 });
  assert.equal(msg.Attachments.length, 1);
  assert.equal(msg.Attachments[0].FileName, "report.csv");
  const blob = await mailpit.getMessageAttachment(msg.ID, msg.Attachments[0].PartID);
  assert.match(await blob.text(), /a,b\r?\n1,2/);
});

test("tags: from X-Tags and plus-addressing, set, listed, searched, renamed, deleted", async () => {
  await mailpit.deleteMessages();
  await send("dave+nightly@example.test", "Tagged one", "first", ["X-Tags: alpha, beta!"]);
  await send("erin@example.test", "Plain two", "second");
  const tagged = await mailpit.waitForMessage({ query: "subject:Tagged" }, { timeout: 5000, interval: 100 });
  assert.deepEqual(tagged.Tags, ["alpha", "beta", "nightly"]);
  const plain = (await mailpit.searchMessages({ query: "subject:Plain" })).messages[0];
  assert.deepEqual(plain.Tags, []);
  // Waiting for a count: both arrived; one of them tagged.
  const both = await mailpit.waitForMessages({ count: 2 }, { timeout: 5000, interval: 100 });
  assert.equal(both.messages_count, 2);
  const tagged1 = await mailpit.waitForMessages(
    { query: "is:tagged", count: 1, exact: true }, { timeout: 5000, interval: 100 });
  assert.equal(tagged1.messages[0].Subject, "Tagged one");
  assert.equal(await mailpit.setTags({ IDs: [plain.ID], Tags: ["Release 1.0", "alpha"] }), "ok");
  assert.deepEqual(await mailpit.getTags(), ["Release 1.0", "alpha", "beta", "nightly"]);
  const page = await mailpit.searchMessages({ query: "tag:alpha" });
  assert.equal(page.messages_count, 2);
  assert.deepEqual(page.tags.includes("nightly"), true);
  assert.equal((await mailpit.searchMessages({ query: "-tag:nightly" })).messages_count, 1);
  assert.equal((await mailpit.searchMessages({ query: "is:tagged" })).messages_count, 2);
  assert.equal(await mailpit.renameTag("alpha", "gamma"), "ok");
  assert.equal(await mailpit.deleteTag("beta"), "ok");
  assert.deepEqual(await mailpit.getTags(), ["Release 1.0", "gamma", "nightly"]);
  const info = await mailpit.getInfo();
  assert.deepEqual(info.Tags, { "Release 1.0": 1, gamma: 2, nightly: 1 });
  assert.equal(await mailpit.setTags({ IDs: [plain.ID] }), "ok");
  assert.deepEqual((await mailpit.getMessageSummary(plain.ID)).Tags, []);
});

test("Mailpit's filters, counts, Bcc, inline parts, checksums, canonical headers, views", async () => {
  await mailpit.deleteMessages();
  const b = "rel";
  await send("frank@example.test", "Inline image", [
    `--${b}`, "Content-Type: text/html", "", '<p>logo <img src="cid:logo@x"> <a href="http://example.test/">x</a></p>',
    `--${b}`, "Content-Type: image/png", "Content-ID: <logo@x>", "Content-Disposition: inline",
    "Content-Transfer-Encoding: base64", "", "aGVsbG8=", `--${b}--`].join("\r\n"),
    ["MIME-Version: 1.0", `Content-Type: multipart/related; boundary=${b}`, "Cc: Carl <carl@example.test>",
      "Reply-To: desk@example.test"],
    ["frank@example.test", "hidden@example.test"]);
  await send("gina@example.test", "Big one", "x ".repeat(20000));
  const msg = await mailpit.waitForMessage({ query: "subject:Inline" }, { timeout: 5000, interval: 100 });
  assert.deepEqual(msg.Bcc, [{ Name: "", Address: "hidden@example.test" }]);
  assert.deepEqual(msg.Cc, [{ Name: "Carl", Address: "carl@example.test" }]);
  assert.deepEqual(msg.ReplyTo, [{ Name: "", Address: "desk@example.test" }]);
  assert.equal(msg.Attachments.length, 0);
  assert.equal(msg.Inline.length, 1);
  assert.equal(msg.Inline[0].PartID, "2");
  assert.equal(msg.Inline[0].ContentID, "logo@x");
  assert.equal(msg.Inline[0].Checksums.MD5, "5d41402abc4b2a76b9719d911017c592");
  assert.equal(msg.Inline[0].Checksums.SHA1, "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
  const img = await mailpit.getMessageAttachment(msg.ID, "2");
  assert.equal(await img.text(), "hello");
  const headers = await mailpit.getMessageHeaders(msg.ID);
  assert.ok(headers["Message-Id"], Object.keys(headers).join(","));
  const html = await mailpit.renderMessageHTML(msg.ID);
  assert.match(html, new RegExp(`src="\\.\\./api/v1/message/${msg.ID}/part/2"`));
  assert.match(await mailpit.renderMessageHTML(msg.ID, 1), /target="_blank"/);

  // A quoted phrase (through the full-text index, which may lag a moment behind delivery).
  const big = await mailpit.waitForMessage({ query: '"Big one"' }, { timeout: 5000, interval: 100 });
  assert.equal(big.Subject, "Big one");
  await mailpit.setReadStatus({ IDs: [big.ID], Read: false });
  const summary = (await mailpit.searchMessages({ query: "cc:carl" })).messages[0];
  assert.equal(summary.ID, msg.ID);
  assert.deepEqual(summary.Bcc, [{ Name: "", Address: "hidden@example.test" }]);
  for (const [q, n] of [["bcc:hidden", 1], ["reply-to:desk", 1], ["addressed:carl", 1],
    ["message-id:Inlineimage@example.net", 1], ["larger:10k", 1], ["smaller:10k", 1],
    ["-subject:Big", 1], ["!is:read", 1], ["subject:nothing", 0]]) {
    assert.equal((await mailpit.searchMessages({ query: q })).messages_count, n, q);
  }
  const counted = await mailpit.searchMessages({ query: "subject:Big" });
  assert.equal(counted.total, 2, "total counts all mail, as Mailpit does");
  assert.equal(counted.messages_count, 1);
  await assert.rejects(mailpit.searchMessages({ query: "kittens:yes" }), /kittens/);
  const info = await mailpit.getInfo();
  assert.ok(info.DatabaseSize > 0);
  assert.ok(info.RuntimeStats.MessagesDeleted >= 2);
});

test("sendMessage injects a message that is listed, tagged and has its attachment", async () => {
  await mailpit.deleteMessages();
  const sent = await mailpit.sendMessage({
    From: { Email: "api@example.net", Name: "API Sender" },
    To: [{ Email: "henry@example.test", Name: "Henry" }],
    Bcc: ["quiet@example.test"],
    Subject: "Sent über the API",
    Text: "plain words",
    HTML: "<p>html words</p>",
    Headers: { "X-Campaign": "spring" },
    Tags: ["api"],
    Attachments: [{ Content: Buffer.from("a,b\n").toString("base64"), Filename: "data.csv", ContentType: "text/csv" }],
  });
  const msg = await mailpit.getMessageSummary(sent.ID);
  assert.equal(msg.Subject, "Sent über the API");
  assert.deepEqual(msg.From, { Name: "API Sender", Address: "api@example.net" });
  assert.deepEqual(msg.Bcc, [{ Name: "", Address: "quiet@example.test" }]);
  assert.deepEqual(msg.Tags, ["api"]);
  assert.match(msg.Text, /plain words/);
  assert.match(msg.HTML, /html words/);
  assert.equal(msg.Attachments[0].FileName, "data.csv");
  assert.equal(await (await mailpit.getMessageAttachment(sent.ID, msg.Attachments[0].PartID)).text(), "a,b\n");
  assert.deepEqual((await mailpit.getMessageHeaders(sent.ID))["X-Campaign"], ["spring"]);
});

// A 240x160 red PNG.
const redPng = "iVBORw0KGgoAAAANSUhEUgAAAPAAAACgCAIAAAC9uXYyAAABP0lEQVR42u3SQQkAAAjAwPUvrSn8yMElGGsK3pAAQ4OhwdBgaAwNhgZDg6HB0BgaDA2GBkODoTE0GBoMDYYGQ2NoMDQYGgwNhsbQYGgwNBgaDI2hwdBgaDA0GBpDg6HB0GBoDA2GBkODocHQGBoMDYYGQ4OhMTQYGgwNhgZDY2gwNBgaDA2GxtBgaDA0GBoMjaHB0GBoMDQYGkODocHQYGiQAEODocHQYGgMDYYGQ4OhwdAYGgwNhgZDg6ExNBgaDA2GBkNjaDA0GBoMDYbG0GBoMDQYGgyNocHQYGgwNBgaQ4OhwdBgaAwNhgZDg6HB0BgaDA2GBkODoTE0GBoMDYYGQ2NoMDQYGgwNhsbQYGgwNBgaDI2hwdBgaDA0GBpDg6HB0GBoMDSGBkODocHQGBoMDYYGQ4OhMTQYGgwNRxZV6XK8KA4DbQAAAABJRU5ErkJggg==";

// The size a JPEG declares in its start-of-frame segment.
function jpegSize(buf) {
  assert.equal(buf.readUInt16BE(0), 0xffd8, "a JPEG");
  for (let i = 2; i < buf.length;) {
    const marker = buf.readUInt16BE(i);
    if (marker >= 0xffc0 && marker <= 0xffc2) return [buf.readUInt16BE(i + 7), buf.readUInt16BE(i + 5)];
    i += 2 + buf.readUInt16BE(i + 2);
  }
  throw new Error("no frame");
}

test("getAttachmentThumbnail: a 180x120 JPEG of an image, a blank one for anything else", async () => {
  await mailpit.deleteMessages();
  const b = "th";
  await send("ivy@example.test", "Pictures", [
    `--${b}`, "Content-Type: text/plain", "", "two files",
    `--${b}`, "Content-Type: image/png", "Content-Disposition: attachment; filename=red.png",
    "Content-Transfer-Encoding: base64", "", redPng,
    `--${b}`, "Content-Type: application/pdf", "Content-Disposition: attachment; filename=a.pdf", "", "%PDF-1.4",
    `--${b}--`].join("\r\n"), ["MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary=${b}`]);
  const msg = await mailpit.getMessageSummary("latest");
  assert.deepEqual(msg.Attachments.map((a) => a.FileName), ["red.png", "a.pdf"]);
  const thumbs = [];
  for (const a of msg.Attachments) {
    const blob = await mailpit.getAttachmentThumbnail(msg.ID, a.PartID);
    assert.equal(blob.type, "image/jpeg");
    const buf = Buffer.from(await blob.arrayBuffer());
    assert.deepEqual(jpegSize(buf), [180, 120], a.FileName);
    thumbs.push(buf);
  }
  assert.ok(!thumbs[0].equals(thumbs[1]), "the image's thumbnail is not the blank one");
  await assert.rejects(mailpit.getAttachmentThumbnail(msg.ID, "9"), /400/);
});

test("linkCheck: answers from allowed servers; a redirect to another address is refused, unrequested", async () => {
  await mailpit.deleteMessages();
  const base = `http://127.0.0.1:${webPort}`;
  await send("jon@example.test", "Links", [
    `<p><a href="${base}/ok">ok</a> <a href="${base}/gone">gone</a> <a href="${base}/to-ok">moved</a>`,
    `<img src="${base}/away"> <a href="http://127.0.0.2:${elsewherePort}/direct">direct</a></p>`].join(" "),
    ["MIME-Version: 1.0", "Content-Type: text/html"]);
  const plain = await mailpit.linkCheck("latest");
  const blocked = "Blocked private/reserved address";
  assert.deepEqual(plain.Links.map((l) => [l.URL.replace(base, ""), l.StatusCode, l.Status]), [
    ["/ok", 200, "OK"], ["/gone", 404, "Not Found"], ["/to-ok", 302, "Found"],
    [`http://127.0.0.2:${elsewherePort}/direct`, 451, blocked], ["/away", 302, "Found"]]);
  assert.equal(plain.Errors, 2);
  const followed = await mailpit.linkCheck("latest", true);
  assert.deepEqual(followed.Links.map((l) => [l.StatusCode, l.Status]),
    [[200, "OK"], [404, "Not Found"], [200, "OK"], [451, blocked], [451, blocked]]);
  assert.equal(followed.Errors, 3);
  assert.deepEqual(elsewhereSeen, [], "127.0.0.2 was never asked");
});

test("htmlCheck: the clients' support of the HTML and CSS a message uses", async () => {
  await mailpit.deleteMessages();
  await send("kim@example.test", "Styled", [
    "<!DOCTYPE html><html><head><style>@media (max-width: 600px) { .c { display: block } }</style></head>",
    '<body><div class="c" style="display: flex; border-radius: 8px">hi</div><video src="v.mp4"></video></body></html>'].join(""),
    ["MIME-Version: 1.0", "Content-Type: text/html"]);
  const check = await mailpit.htmlCheck();
  const bySlug = Object.fromEntries(check.Warnings.map((w) => [w.Slug, w]));
  for (const slug of ["css-display-flex", "css-border-radius", "css-at-media", "html-video"]) {
    assert.ok(bySlug[slug], `${slug} in ${Object.keys(bySlug)}`);
  }
  const flex = bySlug["css-display-flex"];
  assert.equal(flex.Category, "css");
  assert.equal(flex.Score.Found, 1);
  assert.ok(flex.Results.some((r) => r.Family === "outlook" && r.Support === "no"));
  assert.ok(Math.abs(flex.Score.Supported + flex.Score.Partial + flex.Score.Unsupported - 100) < 0.01);
  assert.ok(check.Total.Tests > 200 && check.Total.Nodes >= 4, JSON.stringify(check.Total));
  assert.ok(check.Total.Unsupported > 0);
  assert.ok(check.Platforms.ios.includes("Apple Mail"));
  await send("kim@example.test", "Plain", "no markup here");
  await assert.rejects(mailpit.htmlCheck(), /400.*message does not contain HTML/);
});
