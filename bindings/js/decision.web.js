// "flagforge/decision" for browsers: initialises the decision wasm once.
import init, { signDecision, verifyDecision } from "./web/flagforge.js";
import { makeDecide } from "./decision.js";

await init({ module_or_path: new URL("./web/flagforge_bg.wasm", import.meta.url) });

export const decide = makeDecide(signDecision);
export { verifyDecision };
