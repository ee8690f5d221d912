// Runs golden cases and encodings through a FlagEngine class; used in Node directly and in
// Chromium inside the page, so both hosts run exactly this code.
export async function runCases(FlagEngine, moduleBytes, cases, digest) {
  const engine = await FlagEngine.load(moduleBytes);
  const out = [];
  for (const c of cases) {
    const ctx = FlagEngine.encodeContext(c.context);
    // A case without a flag evaluates every flag in one call.
    const run = (explain) =>
      c.flag == null ? engine.evaluateAllBytes(ctx, explain) : engine.evaluateBytes(c.flag, ctx, explain);
    const result = run(false);
    const explained = run(true);
    out.push({
      name: c.name,
      result: toHex(result),
      explained_sha256: await digest(explained),
    });
  }
  return { hash: engine.hash, results: out };
}

export function runEncodings(FlagEngine, contexts) {
  return contexts.map((c) => ({ name: c.name, bytes: toHex(FlagEngine.encodeContext(c.context)) }));
}

function toHex(bytes) {
  if (!bytes) return null;
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
