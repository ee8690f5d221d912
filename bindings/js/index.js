// flagforge for browsers and Node (one ES module for both): FlagEngine runs a published
// module's bytes; LiveFlags keeps it current from a host daemon. Decision contexts (signing and
// verifying, Ed25519) are in "flagforge/decision", loaded only by code that needs them.
import { FlagEngine } from "./engine.js";
import { makeLive, makeLoadFromUrl } from "./live.js";

/** Loads a module from a URL (e.g. a host daemon's /v1/modules/{ruleset}). */
export const loadFromUrl = makeLoadFromUrl(FlagEngine);
export const LiveFlags = makeLive(FlagEngine);
export { FlagEngine };
