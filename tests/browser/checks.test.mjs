// Browser test of the message checks' tabs (HTML check, Link check) in the web inbox. The
// harness starts Intake with the link check on for 127.0.0.1 only.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { base, cspViolations, item, page, sendMail, setup, shots } from "./harness.mjs";

setup();

test("a message's HTML check and link check tabs", { timeout: 25_000 }, async () => {
  const seen = [];
  const web = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    res.writeHead(req.url === "/ok" ? 200 : 404);
    res.end();
  });
  await new Promise((r) => web.listen(0, "127.0.0.1", r));
  const site = `http://127.0.0.1:${web.address().port}`;
  try {
    await sendMail("lena@example.test", ["From: a@example.net", "Subject: Checked", "MIME-Version: 1.0",
      "Content-Type: text/html", "",
      `<div style="display: flex"><a href="${site}/ok">ok</a> <a href="${site}/gone">gone</a></div>`]);
    await page.goto(base + "/#all");
    await item("Checked").click();
    await page.locator("#message-view").waitFor({ state: "visible" });

    await page.click("#tab-html-check");
    await page.locator("#html-check-summary").waitFor();
    assert.equal(await page.locator("#panel-html").isVisible(), false, "one panel at a time");
    assert.match(await page.textContent("#html-check-summary"), /features tested/);
    const features = await page.locator("#panel-html-check tbody tr").allTextContents();
    assert.ok(features.some((r) => r.startsWith("display:flexcss1")), features.join(" | "));

    await page.click("#tab-link-check");
    await page.locator("#link-check-summary").waitFor();
    assert.match(await page.textContent("#link-check-summary"), /2 links, 1 with errors/);
    const links = await page.locator("#panel-link-check tbody tr").allTextContents();
    assert.deepEqual(links, [`${site}/ok200OK`, `${site}/gone404Not Found`]);
    // The links are checked in parallel: each once, with HEAD, in no fixed order.
    assert.deepEqual([...seen].sort(), ["HEAD /gone", "HEAD /ok"]);
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, "link-check.png") });
    assert.deepEqual(await cspViolations(page), []);
  } finally {
    web.close();
  }
});
