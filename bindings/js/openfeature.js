// What both OpenFeature providers (@flagforge/openfeature-server-provider and
// @flagforge/openfeature-web-provider) share: one mapping from a module's answer to
// OpenFeature's resolution details, so they cannot disagree. No OpenFeature import here:
// the providers pass the SDK's own error-code strings through.

/** OpenFeature's type of each flag (boolean, string, number, object) from the manifest. */
export function flagTypes(manifest) {
  const types = new Map();
  for (const f of manifest.flags) {
    const v = f.variants[0]?.value;
    const t = typeof v === "boolean" ? "boolean" : typeof v === "string" ? "string"
      : typeof v === "number" ? "number" : "object";
    types.set(f.key, t);
  }
  return types;
}

/** An OpenFeature evaluation context as a flagforge context: `targetingKey` stays (the module
 * binds it to the ruleset's targeting key attribute), dates become RFC 3339 strings,
 * undefined values are dropped. */
export function toContext(context) {
  const out = {};
  for (const [k, v] of Object.entries(context ?? {})) {
    if (v === undefined) continue;
    out[k] = v instanceof Date ? v.toISOString() : v;
  }
  return out;
}

/**
 * Resolution details for `flagKey` from a flagforge result (`engine.evaluate`): a failed
 * evaluation carries its `errorCode` (the SDK runs error hooks and returns the caller's
 * default); a flag of another type than asked is TYPE_MISMATCH. Metadata: the flag's own
 * (`metadata:` in its rule file), then ruleset, version, sha256.
 */
export function toResolution(result, expected, types, defaultValue, metadata) {
  // The flag's own metadata, then the provider's (ruleset, version, sha256), which win.
  const flagMetadata = { ...result.metadata, ...metadata };
  if (result.errorCode) {
    return { value: defaultValue, reason: "ERROR", errorCode: result.errorCode,
             errorMessage: result.errorMessage, flagMetadata };
  }
  const actual = types.get(result.key);
  if (actual !== expected) {
    return { value: defaultValue, reason: "ERROR", errorCode: "TYPE_MISMATCH",
             errorMessage: `flag ${result.key} is ${actual}, not ${expected}`, flagMetadata };
  }
  return { value: result.value, variant: result.variant, reason: result.reason, flagMetadata };
}

export function notReady(defaultValue) {
  return { value: defaultValue, reason: "ERROR", errorCode: "PROVIDER_NOT_READY",
           errorMessage: "no module loaded yet" };
}

/**
 * Starts what a provider serves from its options: `{ engine }` or `{ module }` (one module),
 * or `{ baseUrl, ruleset, bootstrap?, pollMs? }` (a flagforge host, through LiveFlags).
 * `onUpdate` receives every module served, the first one included (with `previousHash`
 * null); returns the LiveFlags (null for one module). Throws when the host gave no module.
 */
export async function startModule({ FlagEngine, LiveFlags }, options, onUpdate, onError) {
  if (options.engine || options.module) {
    const engine = options.engine ?? (await FlagEngine.load(new Uint8Array(options.module)));
    onUpdate({ engine, version: null, hash: engine.hash, previousHash: null, flagsChanged: null });
    return null;
  }
  let served = false;
  const live = await LiveFlags.connect({
    baseUrl: options.baseUrl,
    ruleset: options.ruleset,
    bootstrap: options.bootstrap,
    pollMs: options.pollMs,
    onUpdate: (u) => {
      served = true;
      onUpdate(u);
    },
    onError,
  });
  if (!served) {
    live.close();
    throw new Error(`flagforge: no module for ${options.ruleset} from ${options.baseUrl}`);
  }
  return live;
}
