/**
 * The answer panel's bundled script (dist/webview.js, from `npm run build`) in headless
 * Chromium, with VS Code's webview API stubbed: chunks render as markdown while they arrive,
 * model output cannot inject markup, and the code blocks' buttons send the block's code back.
 * Skipped, saying why, when Debian's Chromium or the bundle is missing.
 */

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium, type Browser, type Page } from "playwright-core";

import type { HostMessage } from "../src/messages";

const CHROMIUM = "/usr/bin/chromium";
const BUNDLE = join(__dirname, "..", "..", "dist", "webview.js");
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const missing = !existsSync(CHROMIUM)
  ? `no Chromium at ${CHROMIUM} (apt-get install chromium)`
  : !existsSync(BUNDLE)
    ? "dist/webview.js is not built (npm run build)"
    : false;

let browser: Browser | undefined;

before(async () => {
  if (!missing) browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

after(async () => {
  await browser?.close();
});

const scriptErrors = new WeakMap<Page, string[]>();

/** Close the page; it must not have thrown. */
async function close(page: Page): Promise<void> {
  assert.deepEqual(scriptErrors.get(page), []);
  await page.close();
}

/** A page like the panel's, with `acquireVsCodeApi` recording what the script posts. */
async function panel(): Promise<Page> {
  assert.ok(browser);
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.setContent(
    '<body><div class="bar"><button id="stop" disabled>Stop</button><span id="status"></span></div><main id="turns"></main></body>',
  );
  await page.evaluate(() => {
    const w = window as unknown as { posted: unknown[]; acquireVsCodeApi: () => { postMessage(m: unknown): void } };
    w.posted = [];
    w.acquireVsCodeApi = () => ({ postMessage: (m: unknown) => w.posted.push(m) });
  });
  await page.addScriptTag({ content: readFileSync(BUNDLE, "utf8") });
  scriptErrors.set(page, errors);
  return page;
}

/** Post `message` as the extension would, and wait until the panel has painted it. */
async function send(page: Page, message: HostMessage): Promise<void> {
  await page.evaluate((m) => window.postMessage(m, "*"), message);
  await page.evaluate(() => new Promise((done) => setTimeout(() => requestAnimationFrame(() => done(null)), 0)));
}

test("chunks render as markdown as they arrive; Insert and Replace send the block's code", { skip: missing }, async () => {
  const page = await panel();
  await send(page, { type: "start", title: "Fix this error", question: "ZeroDivisionError: division by zero", detail: "demo" });
  assert.equal(await page.isEnabled("#stop"), true);
  const pieces = ["The list is **empty**", ", so `len(xs)` is 0.\n\n```python\ndef mean(xs):\n", "    return sum(xs) / len(xs) if xs else 0.0\n```\n"];
  const seen: string[] = [];
  for (const text of pieces) {
    await send(page, { type: "chunk", text });
    seen.push((await page.textContent(".answer")) ?? "");
  }
  assert.ok(seen[0].startsWith("The list is empty") && seen[1].length > seen[0].length, JSON.stringify(seen));
  await send(page, { type: "end", state: "done", stats: "first token 12 ms · 30 tokens out, 5 in · finish: stop · 0.4 s" });
  await page.waitForSelector(".answer .code");
  assert.equal(await page.textContent(".answer strong"), "empty");
  assert.equal(await page.textContent(".hljs-keyword"), "def");
  assert.equal(await page.isEnabled("#stop"), false);
  assert.match((await page.textContent(".stats")) ?? "", /finish: stop/);
  await page.click(".code button[data-action=insert]");
  await page.click(".code button[data-action=replace]");
  const posted = await page.evaluate(() => (window as unknown as { posted: unknown[] }).posted);
  const code = "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n";
  assert.deepEqual(posted, [
    { type: "insert", code },
    { type: "replace", code },
  ]);
  await close(page);
});

test("markup in an answer stays text; Stop posts stop while streaming; problems show", { skip: missing }, async () => {
  const page = await panel();
  await send(page, { type: "start", title: "Ask", question: "<b>hi</b>", detail: "demo" });
  await send(page, { type: "chunk", text: '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> [x](javascript:alert(1))' });
  await page.waitForFunction(() => (document.querySelector(".answer")?.textContent ?? "").includes("<img"));
  assert.equal(await page.locator(".answer img, .answer script, .answer a, .question b").count(), 0);
  assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
  await page.click("#stop");
  await send(page, { type: "problem", text: "The model's service failed while answering. (upstream_error)" });
  await send(page, { type: "end", state: "error", stats: "finish: error · 0.1 s" });
  assert.equal(await page.isVisible(".problem"), true);
  assert.deepEqual(await page.evaluate(() => (window as unknown as { posted: unknown[] }).posted), [{ type: "stop" }]);
  await close(page);
});
