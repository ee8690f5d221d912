// Shared by the bindings tests: where things are, and comparing a host's answers with the
// golden bytes the Rust hosts (native evaluator-core and wasmtime) produced.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// Modules built by `flagforge build` (scripts/test-bindings.sh puts them here).
export const modulesDir = process.env.FLAGFORGE_MODULES ?? path.join(root, "target/conformance");
export const goldenNames = ["corpus", "checkout"];

export function golden(name) {
  return JSON.parse(readFileSync(path.join(root, "corpus/golden", `${name}.json`), "utf8"));
}

export function moduleBytes(name) {
  return readFileSync(path.join(modulesDir, `${name}.wasm`));
}

export function hex(bytes) {
  return Buffer.from(bytes).toString("hex");
}

/** Lists every case whose bytes differ, naming the case, the hosts and both outputs. */
export function disagreements(host, expected, actual) {
  const out = [];
  for (const [i, e] of expected.entries()) {
    const a = actual[i];
    for (const field of Object.keys(e)) {
      if (field === "name") continue;
      if (e[field] !== a?.[field]) {
        out.push(`${e.name}: ${field} differs\n  rust (native = wasmtime): ${e[field]}\n  ${host}: ${a?.[field]}`);
      }
    }
  }
  return out;
}

/** A free loopback port. */
export async function freePort() {
  const { createServer } = await import("node:net");
  const srv = createServer();
  await new Promise((ok) => srv.listen(0, "127.0.0.1", ok));
  const { port } = srv.address();
  await new Promise((ok) => srv.close(ok));
  return port;
}

/** Waits until `check()` is truthy (exceptions mean "not yet"), checking every `everyMs`. */
export async function until(what, check, timeoutMs = 30000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
