// The shared corpus in Node: every golden case through the built npm package (bindings/pkg)
// must give the exact result bytes the Rust hosts gave; context encodings must match the
// Rust encoder byte for byte; the object API must give what `flagforge eval` prints.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { root, golden, goldenNames, moduleBytes, modulesDir, disagreements } from "./common.js";
import { runCases, runEncodings, runHostCases } from "./run-cases.js";

const { FlagEngine } = await import(path.join(root, "bindings/pkg/index.js"));
const sha256 = async (bytes) => createHash("sha256").update(bytes).digest("hex");

for (const name of goldenNames) {
  test(`node: ${name} cases give the golden result bytes`, async () => {
    const g = golden(name);
    const { results } = await runCases(FlagEngine, moduleBytes(name), g.cases, sha256);
    const expected = g.cases.map((c) => ({ name: c.name, result: c.result, explained_sha256: c.explained_sha256 }));
    const diff = disagreements("node", expected, results);
    assert.equal(diff.length, 0, `${diff.length} disagreement(s):\n${diff.join("\n")}`);
    console.log(`node: ${name}: ${results.length} cases, 0 disagreements`);
  });
}

test("node: the host-conformance corpus gives every host's codes", async () => {
  const corpus = JSON.parse(readFileSync(path.join(root, "corpus/host/cases.json"), "utf8"));
  const { wrong, checked } = await runHostCases(FlagEngine, corpus, moduleBytes("checkout"));
  assert.deepEqual(wrong, []);
  console.log(`node: ${checked} host-conformance cases, 0 differ`);
});

test("node: context encodings match the Rust encoder", () => {
  const g = JSON.parse(readFileSync(path.join(root, "corpus/golden/encoding.json"), "utf8"));
  const actual = runEncodings(FlagEngine, g.contexts);
  const diff = disagreements("node", g.contexts.map(({ name, bytes }) => ({ name, bytes })), actual);
  assert.equal(diff.length, 0, diff.join("\n"));
});

test("node: JavaScript-only values encode canonically", () => {
  const enc = (c) => Buffer.from(FlagEngine.encodeContext(c)).toString("hex");
  // undefined members are absent, as JSON.stringify drops them.
  assert.equal(enc({ a: 1, b: undefined }), enc({ a: 1 }));
  // BigInt is an integer, also beyond 2^53.
  assert.equal(enc({ n: 2n ** 60n }), "81a16ecf1000000000000000");
  assert.equal(enc({ n: 5n }), enc({ n: 5 }));
  // Unusable values are refused with the path.
  assert.throws(() => FlagEngine.encodeContext({ a: { b: NaN } }), /context\.a\.b: NaN is not a finite number/);
  assert.throws(() => FlagEngine.encodeContext({ f: () => 1 }), /functions and symbols/);
  assert.throws(() => FlagEngine.encodeContext({ n: 2n ** 64n }), /does not fit/);
  assert.throws(() => FlagEngine.encodeContext([1]), /must be an object/);
  let deep = {};
  for (let i = 0; i < 40; i++) deep = { d: deep };
  assert.throws(() => FlagEngine.encodeContext(deep), /nested deeper than 32/);
});

test("node: bad input is a result, never an exception", async () => {
  const engine = await FlagEngine.load(moduleBytes("checkout"));
  const r = engine.evaluate("FraudEngineRoutingMode", { market: NaN });
  assert.equal(r.reason, "ERROR");
  assert.equal(r.errorCode, "INVALID_CONTEXT");
  assert.equal(r.variant, "engine_v2");
  const missing = engine.evaluate("NoSuchFlag", {});
  assert.equal(missing.errorCode, "FLAG_NOT_FOUND");
  assert.equal(missing.value, null);
  const typed = engine.evaluate("FraudEngineRoutingMode", { market: 33 });
  assert.equal(typed.errorCode, "TYPE_MISMATCH");
  assert.equal(engine.evaluateAll(null).length, engine.manifest.flags.length);
});

test("node: hostile module bytes are refused with a code", async () => {
  const cases = [
    [new Uint8Array([1, 2, 3]), "bad_magic"],
    // (module (import "env" "f" (func))) — imports something.
    [new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 2, 9, 1, 3, 101, 110, 118, 1, 102, 0, 0]), "imports"],
    // (module) — valid, but not a flagforge module.
    [new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]), "missing_export"],
  ];
  for (const [bytes, code] of cases) {
    await assert.rejects(FlagEngine.load(bytes), (e) => e.code === code, `expected ${code}`);
  }
});

test("node: the package gives the same JSON as `flagforge eval`", async () => {
  const cli = path.join(root, "target/release/flagforge");
  const wasm = path.join(process.env.FLAGFORGE_MODULES ?? path.join(root, "target/conformance"), "checkout.wasm");
  const engine = await FlagEngine.load(moduleBytes("checkout"));
  const contexts = [
    { tenant: "acme-fr", market: "FR", customer_id: "c-1001", now: "2026-12-01T10:00:00Z" },
    { market: 33, now: "2026-12-01T10:00:00Z" },
    { market: "DE", order_total: 99.9, customer_id: "c-7", now: "2026-12-01T10:00:00Z" },
  ];
  for (const ctx of contexts) {
    for (const flag of engine.manifest.flags.map((f) => f.key)) {
      const out = execFileSync(cli, ["eval", wasm, "--flag", flag, "--context", JSON.stringify(ctx)]);
      assert.deepEqual(engine.evaluate(flag, ctx), JSON.parse(out), `${flag} ${JSON.stringify(ctx)}`);
    }
    const all = JSON.parse(execFileSync(cli, ["eval", wasm, "--context", JSON.stringify(ctx)]));
    const mine = Object.fromEntries(engine.evaluateAll(ctx).map((r) => [r.key, r]));
    assert.deepEqual(mine, all);
  }
});

test("node: decision contexts made in JS verify in Rust and the other way round", async () => {
  const { decide, verifyDecision } = await import(path.join(root, "bindings/pkg/decision.node.js"));
  const { mkdtempSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const cli = path.join(root, "target/release/flagforge");
  const dir = mkdtempSync(path.join(tmpdir(), "flagforge-decision-"));
  execFileSync(cli, ["keygen", "--out", path.join(dir, "k")]);
  execFileSync(cli, ["keygen", "--out", path.join(dir, "other")]);
  const secret = readFileSync(path.join(dir, "k/flagforge.key"), "utf8");
  const pub = readFileSync(path.join(dir, "k/flagforge.pub"), "utf8");
  const otherPub = readFileSync(path.join(dir, "other/flagforge.pub"), "utf8");
  const engine = await FlagEngine.load(moduleBytes("checkout"));
  const ctx = { tenant: "acme-fr", market: "FR", customer_id: "c-1001", now: "2026-12-10T09:00:00Z" };
  const flags = ["FulfillmentRoutingMode", "TaxCalculationMode"];

  // JS decides, the Rust CLI verifies.
  const header = decide(engine, { flags, context: ctx, correlationId: "order-js-1", secretKey: secret, ttlMs: 60000 });
  const decoded = JSON.parse(execFileSync(cli, ["verify-decision", header, "--key", path.join(dir, "k/flagforge.pub")], { encoding: "utf8" }));
  assert.equal(decoded.correlation_id, "order-js-1");
  assert.equal(decoded.rulesets[0].sha256, engine.hash);
  for (const f of flags) assert.equal(decoded.decisions[f].variant, engine.evaluate(f, ctx).variant);

  // The Rust CLI decides, JS verifies; refusals come back as values with their kind.
  const wasm = path.join(modulesDir, "checkout.wasm");
  const rustHeader = execFileSync(cli, ["decide", wasm, "--flags", flags.join(","), "--context", JSON.stringify(ctx),
    "--key", path.join(dir, "k/flagforge.key"), "--correlation-id", "order-rs-1"], { encoding: "utf8" }).trim();
  const ok = verifyDecision(rustHeader, [pub]);
  assert.equal(ok.ok, true);
  assert.equal(ok.context.correlation_id, "order-rs-1");
  assert.equal(ok.context.decisions.FulfillmentRoutingMode.variant, "NEW_PRIMARY");
  assert.equal(verifyDecision(rustHeader, [otherPub]).kind, "unknown_key");
  assert.equal(verifyDecision(rustHeader, [pub], Date.now() + 3600e3).kind, "expired");
  assert.equal(verifyDecision(rustHeader.slice(0, -2) + (rustHeader.endsWith("A") ? "BB" : "AA"), [pub]).ok, false);
  const ask = (flags, secretKey) => () => decide(engine, { flags, context: ctx, correlationId: "x", secretKey, ttlMs: 1000 });
  assert.throws(ask(["NoSuchFlag"], secret), (e) => e.code === "unknown_flag");
  assert.throws(ask(flags, "not a key"), (e) => e.code === "bad_key");
  // A forgotten ttlMs would sign a context that expired when it was made.
  assert.throws(() => decide(engine, { flags, context: ctx, correlationId: "x", secretKey: secret }), TypeError);
});

test("node: only the attributes a flag reads are sent, as wasm-host sends", async () => {
  const engine = await FlagEngine.load(moduleBytes("checkout"));
  let deep = {};
  for (let i = 0; i < 40; i++) deep = { d: deep };
  // Unread members (too deep, not finite) neither fail nor change the answer.
  const plain = engine.evaluate("FraudEngineRoutingMode", { market: "IT" });
  const noisy = engine.evaluate("FraudEngineRoutingMode", { market: "IT", deep, junk: NaN });
  assert.deepEqual(noisy, plain);
  assert.equal(plain.variant, "engine_v2");
  // A read attribute is still checked.
  assert.equal(engine.evaluate("FraudEngineRoutingMode", { market: NaN }).errorCode, "INVALID_CONTEXT");
});

test("node: flag values are the caller's own: changing one answer changes no other", async () => {
  const engine = await FlagEngine.load(moduleBytes("checkout"));
  const ctx = { tenant: "acme-fr", tier: "gold", app_version: "2.5.0" };
  const first = engine.evaluate("PremiumEntitlementRule", ctx);
  assert.equal(typeof first.value, "object");
  const before = structuredClone(first.value);
  first.value.free_shipping = "changed";
  engine.evaluateAll(ctx)[7].value.returns_days = -1;
  assert.deepEqual(engine.evaluate("PremiumEntitlementRule", ctx).value, before);
  assert.deepEqual(engine.manifest.flags[7].variants.map((v) => typeof v.value), ["object", "object", "object"]);
});

test("node: a module's identity is its sha256, also where WebCrypto is missing", async () => {
  const { sha256Portable } = await import(path.join(root, "bindings/pkg/sha256.js"));
  const bytes = moduleBytes("checkout");
  const engine = await FlagEngine.load(bytes);
  const want = createHash("sha256").update(bytes).digest("hex");
  assert.equal(engine.hash, want);
  // Plain-HTTP pages other than localhost have no crypto.subtle: the portable digest.
  for (const n of [0, 55, 56, 64, 1000]) {
    const b = bytes.subarray(0, n);
    assert.equal(sha256Portable(b), createHash("sha256").update(b).digest("hex"), `${n} bytes`);
  }
  assert.equal(sha256Portable(bytes), want);
});

test("node: a hot loop of evaluate and evaluateAll runs in optimised code", () => {
  // Node 20's optimising compiler aborted the process (V8 RepresentationChangerError, a phi
  // of two wasm i64 results) once evaluate and evaluateAll were hot in one function.
  const script = `
    import { FlagEngine } from ${JSON.stringify(path.join(root, "bindings/pkg/index.js"))};
    import { readFileSync } from "node:fs";
    const e = await FlagEngine.load(readFileSync(${JSON.stringify(path.join(modulesDir, "checkout.wasm"))}));
    const flags = e.manifest.flags.map((f) => f.key);
    const ctxs = [{ market: "FR", customer_id: "c-1", tenant: "acme-fr" }, { market: "IT", customer_id: "c-2" }];
    let n = 0;
    for (let i = 0; i < 200000; i++) {
      const r = i % 7 === 0 ? e.evaluateAll(ctxs[i & 1]) : e.evaluate(flags[i % flags.length], ctxs[i & 1]);
      n += r.length ?? 1;
    }
    console.log(n);`;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
  assert.ok(Number(out) > 200000, out);
});

test("node: the browser runtime and the checkout browser module fit their budgets (gzipped)", async () => {
  const { gzipSync } = await import("node:zlib");
  const gz = (b) => gzipSync(b, { level: 9 }).length;
  // Everything a page imports from "flagforge" (decision contexts are a separate entry).
  const files = ["index.js", "engine.js", "msgpack.js", "sha256.js", "live.js"];
  const imports = new Set();
  for (const f of files) {
    for (const [, dep] of readFileSync(path.join(root, "bindings/pkg", f), "utf8").matchAll(/from "\.\/([^"]+)"/g)) imports.add(dep);
  }
  assert.deepEqual([...imports].filter((d) => !files.includes(d)), [], "an import outside the measured files");
  const runtime = files.reduce((n, f) => n + gz(readFileSync(path.join(root, "bindings/pkg", f))), 0);
  const module = gz(moduleBytes("checkout.browser"));
  console.log(`browser runtime ${runtime} bytes gzipped; + checkout.browser module ${module} = ${runtime + module}`);
  assert.ok(runtime <= 25 * 1024, `runtime ${runtime} bytes gzipped, budget 25 KB`);
  assert.ok(runtime + module <= 130 * 1024, `runtime + module ${runtime + module} bytes gzipped, budget 130 KB`);
});

test("node: a context that makes the module grow its memory is written into the grown memory", async () => {
  const engine = await FlagEngine.load(moduleBytes("checkout"));
  // ~900 KB (under the 1 MiB context bound): the input region outgrows the initial memory.
  const big = { market: "IT", tenant: "t".repeat(900 * 1024) };
  const r = engine.evaluate("FulfillmentRoutingMode", big);
  assert.equal(r.errorCode, undefined, r.errorMessage);
  assert.deepEqual(engine.evaluate("FulfillmentRoutingMode", { ...big, tenant: "acme-fr" }),
    engine.evaluate("FulfillmentRoutingMode", { market: "IT", tenant: "acme-fr" }));
  assert.equal(engine.evaluate("FraudEngineRoutingMode", { market: "IT" }).variant, "engine_v2");
});
