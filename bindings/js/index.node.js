// flagforge for Node (ES module entry over wasm-bindgen's CommonJS build for Node).
import { createRequire } from "node:module";
import { makeLive, makeLoadFromUrl } from "./live.js";

const require = createRequire(import.meta.url);
const { FlagEngine, verifyDecision } = require("./node/flagforge.js");

/** Loads a module from a URL (e.g. a host daemon's /v1/modules/{ruleset}). */
export const loadFromUrl = makeLoadFromUrl(FlagEngine);
export const LiveFlags = makeLive(FlagEngine);
export { FlagEngine, verifyDecision };
