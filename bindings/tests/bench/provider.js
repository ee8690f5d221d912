// OpenFeature provider overhead in Node, side by side in one run: FlagEngine.evaluate (bare)
// vs the @openfeature/server-sdk client through @flagforge/openfeature-server-provider.
// Interleaved rounds, median ns per evaluation. Run after scripts/test-bindings.sh (which
// installs the packages): node bindings/tests/bench/provider.js
import { OpenFeature } from "@openfeature/server-sdk";
import { FlagforgeProvider } from "@flagforge/openfeature-server-provider";
import { FlagEngine } from "flagforge";
import { moduleBytes } from "../common.js";

const FLAG = "CheckoutExperienceVariant";
const N = 20000, ROUNDS = 15;
const engine = await FlagEngine.load(moduleBytes("checkout"));
await OpenFeature.setProviderAndWait(new FlagforgeProvider({ engine }));
const client = OpenFeature.getClient();
const ctx = { targetingKey: "c-1001" };
if (engine.evaluate(FLAG, ctx).variant !== "one_page") throw new Error("bare answer");
if ((await client.getStringDetails(FLAG, "", ctx)).variant !== "one_page") throw new Error("sdk answer");
const median = (v) => v.sort((a, b) => a - b)[v.length >> 1];
const bare = [], sdk = [];
for (let r = 0; r < ROUNDS; r++) {
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) engine.evaluate(FLAG, ctx);
  bare.push(Number(process.hrtime.bigint() - t) / N);
  t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await client.getStringDetails(FLAG, "", ctx);
  sdk.push(Number(process.hrtime.bigint() - t) / N);
}
const b = median(bare), s = median(sdk);
console.log(`node: one flag (${FLAG}, targetingKey only), median of ${ROUNDS} rounds x ${N}`);
console.log(`  bare FlagEngine.evaluate                 ${b.toFixed(0).padStart(8)} ns`);
console.log(`  server-sdk client + FlagforgeProvider    ${s.toFixed(0).padStart(8)} ns  (${(s / b).toFixed(2)}x, +${(s - b).toFixed(0)} ns)`);
await OpenFeature.close();
