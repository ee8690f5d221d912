// examples/bff-node in real Node: the BFF's page model carries the same decisions as
// `flagforge eval` on the same module and context.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import path from "node:path";
import { root, modulesDir } from "./common.js";

const children = [];
after(() => children.forEach((c) => c.kill("SIGKILL")));

test("the Node BFF example answers with the module's decisions", async () => {
  const srv = createServer();
  await new Promise((ok) => srv.listen(0, "127.0.0.1", ok));
  const port = srv.address().port;
  await new Promise((ok) => srv.close(ok));
  const wasm = path.join(modulesDir, "checkout.wasm");
  const bff = spawn("node", [path.join(root, "examples/bff-node/server.js")], {
    env: { ...process.env, PORT: String(port), FLAGFORGE_MODULE: wasm },
    stdio: ["ignore", "ignore", "pipe"],
  });
  children.push(bff);
  await new Promise((ok, fail) => {
    bff.stderr.on("data", (d) => String(d).includes("listening") && ok());
    bff.on("exit", (code) => fail(new Error(`bff exited with ${code}`)));
  });
  const visitors = [
    { customer_id: "c-1001", tenant: "acme-fr", market: "FR", tier: "gold" },
    { customer_id: "c-3107", tenant: "globex-de", market: "DE", tier: "platinum" },
    { customer_id: "c-9", tenant: "shop-1", market: "ES" },
  ];
  for (const v of visitors) {
    const res = await fetch(`http://127.0.0.1:${port}/checkout-page?${new URLSearchParams(v)}`);
    assert.equal(res.status, 200);
    const page = await res.json();
    for (const flag of ["CheckoutExperienceVariant", "PremiumEntitlementRule"]) {
      const cli = JSON.parse(execFileSync(path.join(root, "target/release/flagforge"),
        ["eval", wasm, "--flag", flag, "--context", JSON.stringify(v)], { encoding: "utf8" }));
      assert.deepEqual(page.decisions[flag], cli, `${flag} for ${JSON.stringify(v)}`);
    }
    assert.deepEqual(page.layout, page.decisions.CheckoutExperienceVariant.value);
  }
});
