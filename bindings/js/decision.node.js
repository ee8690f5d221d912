// "flagforge/decision" for Node (ES module over wasm-bindgen's CommonJS build for Node).
import { createRequire } from "node:module";
import { makeDecide } from "./decision.js";

const { signDecision, verifyDecision } = createRequire(import.meta.url)("./node/flagforge.js");

export const decide = makeDecide(signDecision);
export { verifyDecision };
