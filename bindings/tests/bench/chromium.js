// Chromium side of the host benchmark (headless Debian Chromium via playwright-core): prints
// {measure: ns/op} as JSON. Arg: the data directory, relative to the repository root.
import path from "node:path";
import { root } from "../common.js";
import { serveRepo } from "../server.js";
import { launch } from "../browser.js";

const dir = path.relative(root, path.resolve(process.argv[2]));
const { server, base } = await serveRepo();
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(`${base}/bindings/tests/bench/bench.html`);
  await page.waitForFunction(() => window.ready === true);
  console.log(JSON.stringify(await page.evaluate((d) => window.runBench(d), dir)));
} finally {
  await browser.close();
  server.close();
}
