// The shared corpus in real headless Chromium (Debian's, driven by playwright-core): the same
// cases and encodings as in Node, compared byte for byte with the Rust hosts' golden bytes.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { root, golden, goldenNames, disagreements } from "./common.js";
import { serveRepo } from "./server.js";
import { launch } from "./browser.js";

let server, base, browser, page;
before(async () => {
  ({ server, base } = await serveRepo());
  browser = await launch();
  page = await browser.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${base}/bindings/tests/harness.html`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: 30000 });
});
after(async () => {
  await browser?.close();
  server?.close();
});

for (const name of goldenNames) {
  test(`chromium: ${name} cases give the golden result bytes`, async () => {
    const g = golden(name);
    const { results } = await page.evaluate((n) => window.runIdentity(n), name);
    const expected = g.cases.map((c) => ({ name: c.name, result: c.result, explained_sha256: c.explained_sha256 }));
    const diff = disagreements("chromium", expected, results);
    assert.equal(diff.length, 0, `${diff.length} disagreement(s):\n${diff.join("\n")}`);
    console.log(`chromium: ${name}: ${results.length} cases, 0 disagreements`);
  });
}

test("chromium: the host-conformance corpus gives every host's codes", async () => {
  const { wrong, checked } = await page.evaluate(() => window.runHostCases());
  assert.deepEqual(wrong, []);
  console.log(`chromium: ${checked} host-conformance cases, 0 differ`);
});

test("chromium: context encodings match the Rust encoder", async () => {
  const g = JSON.parse(readFileSync(path.join(root, "corpus/golden/encoding.json"), "utf8"));
  const actual = await page.evaluate(() => window.runEncodings());
  const diff = disagreements("chromium", g.contexts.map(({ name, bytes }) => ({ name, bytes })), actual);
  assert.equal(diff.length, 0, diff.join("\n"));
});
