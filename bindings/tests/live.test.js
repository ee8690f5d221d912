// A live update reaches the page: a real tansu broker, `flagforge publish` and `flagforge host`
// (the release binary), and examples/browser in headless Chromium. Publishing v2 changes the
// decision shown on the page without a reload; a screenshot is saved to
// target/screenshots/browser-live-update.png.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { root, freePort, until } from "./common.js";
import { serveRepo } from "./server.js";
import { launch } from "./browser.js";

const cli = path.join(root, "target/release/flagforge");
const children = [];
const cleanups = [];
after(async () => {
  for (const c of children) c.kill("SIGKILL");
  for (const f of cleanups) await f();
});

function run(...args) {
  return execFileSync(cli, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

test("a new version published to Kafka reaches the browser page without a reload", async () => {
  const work = mkdtempSync(path.join(tmpdir(), "flagforge-live-"));
  // v1 is the checkout example; v2 also switches the v3 fraud engine off in France.
  const src = path.join(work, "v2");
  cpSync(path.join(root, "rules-examples/checkout"), src, { recursive: true });
  for (const f of readdirSync(src).filter((f) => f.endsWith(".yaml"))) {
    const p = path.join(src, f);
    writeFileSync(p, readFileSync(p, "utf8").replace(`when: 'market == "IT"'`, `when: 'market in ["IT", "FR"]'`));
  }
  run("build", path.join(root, "rules-examples/checkout"), "-o", path.join(work, "v1.wasm"));
  run("build", src, "-o", path.join(work, "v2.wasm"));
  run("keygen", "--out", path.join(work, "keys"));

  const kafkaPort = await freePort();
  const kafka = `127.0.0.1:${kafkaPort}`;
  children.push(spawn(path.join(root, ".tools/bin/tansu"), ["broker", "--listener-url", `tcp://${kafka}`,
    "--advertised-listener-url", `tcp://${kafka}`, "--storage-engine", "memory://tansu/"], { stdio: "ignore" }));
  const publish = (file, reason) => run("publish", path.join(work, file), "--brokers", kafka,
    "--key", path.join(work, "keys/flagforge.key"), "--reason", reason);
  await until("the broker takes a publish", () => (publish("v1.wasm", "launch"), true));

  const hostPort = await freePort();
  const hostUrl = `http://127.0.0.1:${hostPort}`;
  children.push(spawn(cli, ["host", "--brokers", kafka, "--trusted-key", path.join(work, "keys/flagforge.pub"),
    "--snapshot-dir", path.join(work, "snapshots"), "--listen", `127.0.0.1:${hostPort}`,
    "--ruleset", "checkout", "--cors-origin", "*"], { stdio: "ignore" }));
  await until("the host is ready", async () => (await fetch(`${hostUrl}/readyz`)).ok);

  const { server, base } = await serveRepo();
  cleanups.push(() => server.close());
  const browser = await launch();
  cleanups.push(() => browser.close());
  const page = await browser.newPage();
  const context = JSON.stringify({ market: "FR", tenant: "acme-fr", customer_id: "c-1001" });
  await page.goto(`${base}/examples/browser/index.html?host=${encodeURIComponent(hostUrl)}` +
    `&ruleset=checkout&context=${encodeURIComponent(context)}`);
  await page.evaluate(() => { window.loadMarker = "first load"; });
  const decision = () => page.locator('tr[data-flag="FraudEngineRoutingMode"] td').nth(1).textContent();
  await until("the page shows v1's decision", async () =>
    (await decision()) === "engine_v3" && (await page.locator("#version").textContent()) === "1");

  publish("v2.wasm", "kill the v3 fraud engine in FR");
  await until("the page shows v2's decision", async () =>
    (await decision()) === "engine_v2" && (await page.locator("#version").textContent()) === "2");
  assert.equal(await page.evaluate(() => window.loadMarker), "first load", "the page was not reloaded");
  assert.match(await page.locator("#status").textContent(), /serving version 2/);

  const shots = path.join(root, "target/screenshots");
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, "browser-live-update.png"), fullPage: true });
});
