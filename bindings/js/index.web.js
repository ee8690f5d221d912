// flagforge for browsers (ES module): initialises the bindings' own wasm once, then exposes
// FlagEngine (runs a published module's bytes) and LiveFlags (keeps it current from a host).
import init, { FlagEngine, verifyDecision } from "./web/flagforge.js";
import { makeLive, makeLoadFromUrl } from "./live.js";

await init({ module_or_path: new URL("./web/flagforge_bg.wasm", import.meta.url) });

/** Loads a module from a URL (e.g. a host daemon's /v1/modules/{ruleset}). */
export const loadFromUrl = makeLoadFromUrl(FlagEngine);
export const LiveFlags = makeLive(FlagEngine);
export { FlagEngine, verifyDecision };
