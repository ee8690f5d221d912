// Decision contexts (docs/decision-context.md) over a FlagEngine: the answers come from the
// JavaScript runtime, the signing and verifying from the Rust code every host uses (this
// package's own wasm, Ed25519). Shared by the browser and Node entry points of
// "flagforge/decision", which differ only in how they load that wasm.

/** `decide` for the wasm's `signDecision`. */
export function makeDecide(signDecision) {
  /**
   * Decides `flags` once for a workflow and returns the signed decision context header value
   * (`flagforge-decision`), exactly as `flagforge decide` and the Rust hosts make it.
   * `secretKey` is the text of a key file from `flagforge keygen`. Throws an Error with `code`
   * `bad_key` or `unknown_flag` (configuration mistakes, not input).
   */
  return function decide(engine, { flags, context, correlationId, secretKey, ttlMs, version, nowMs }) {
    if (!Array.isArray(flags) || typeof correlationId !== "string" || !(ttlMs > 0)) {
      throw new TypeError("decide needs flags (a list), correlationId (a string) and ttlMs (> 0)");
    }
    const known = new Set(engine.manifest.flags.map((f) => f.key));
    const unknown = flags.find((f) => !known.has(f));
    if (unknown !== undefined) {
      const e = new Error(`flag \`${unknown}\` is not defined in ruleset \`${engine.ruleset}\``);
      e.code = "unknown_flag";
      throw e;
    }
    const results = flags.map((f) => engine.evaluate(f, context));
    return signDecision(engine.ruleset, engine.hash, results, correlationId, secretKey, ttlMs, version, nowMs);
  };
}
