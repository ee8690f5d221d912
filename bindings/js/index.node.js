// flagforge for Node (ES module entry over wasm-bindgen's CommonJS build for Node).
import { createRequire } from "node:module";
import { makeLive } from "./live.js";

const require = createRequire(import.meta.url);
const { FlagEngine, verifyDecision } = require("./node/flagforge.js");

/** Loads a module from a URL (e.g. a host daemon's /v1/modules/{ruleset}). */
export async function loadFromUrl(url, init) {
  const res = await fetch(url, init);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return FlagEngine.load(new Uint8Array(await res.arrayBuffer()));
}

export const LiveFlags = makeLive(FlagEngine);
export { FlagEngine, verifyDecision };
