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

// The host-conformance corpus (corpus/host/cases.json): the code every host gives for each
// hostile module, call and context. Returns the cases that differ. `metered` cases need fuel
// and a memory cap, which JavaScript engines do not offer: they are skipped here.
export async function runHostCases(FlagEngine, corpus, checkoutBytes) {
  const wrong = [];
  const differs = (c, r) => {
    const got = [r.reason, r.errorCode ?? null, r.variant ?? null];
    const want = [c.reason, c.code ?? null, c.variant ?? null];
    if (JSON.stringify(got) !== JSON.stringify(want)) wrong.push(`${c.name}: got ${got}, want ${want}`);
  };
  for (const m of corpus.modules) {
    let got = null;
    try {
      await FlagEngine.load(fromHex(m.hex));
    } catch (e) {
      got = e.code ?? `no code: ${e}`;
    }
    if (got !== m.load) wrong.push(`${m.name}: got ${got}, want ${m.load}`);
  }
  let n = corpus.modules.length;
  for (const c of corpus.hostile.calls) {
    if (c.metered) continue;
    // A fresh engine per call: after a trap the bindings re-instantiate in the background.
    const hostile = await FlagEngine.load(fromHex(corpus.hostile.hex));
    differs(c, hostile.evaluate(c.flag, {}));
    n++;
  }
  const checkout = await FlagEngine.load(checkoutBytes);
  for (const c of corpus.contexts.cases) {
    const ctx = { ...c.context };
    for (const [name, depth] of Object.entries(c.deep ?? {})) {
      let v = "x";
      for (let i = 0; i < depth; i++) v = [v];
      ctx[name] = v;
    }
    for (const [name, size] of Object.entries(c.oversized ?? {})) ctx[name] = "x".repeat(size);
    differs(c, checkout.evaluate(c.flag, ctx));
    n++;
  }
  for (const c of corpus.bytes.cases) {
    const m = readMap(checkout.evaluateBytes(c.flag, fromHex(c.hex)));
    differs(c, { reason: m.reason, errorCode: m.error_code, variant: m.variant });
    n++;
  }
  return { wrong, checked: n };
}

function fromHex(hex) {
  return new Uint8Array(hex.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
}

// Reads a result's MessagePack map of string keys to scalars (enough for the fields checked
// above; anything else throws).
function readMap(bytes) {
  let at = 0;
  const text = (n) => new TextDecoder().decode(bytes.subarray(at, (at += n)));
  const value = () => {
    const b = bytes[at++];
    if (b >= 0xa0 && b <= 0xbf) return text(b - 0xa0);
    if (b === 0xd9) return text(bytes[at++]);
    if (b === 0xda) return text((bytes[at++] << 8) | bytes[at++]);
    if (b === 0xc0) return null;
    if (b === 0xc2 || b === 0xc3) return b === 0xc3;
    if (b <= 0x7f) return b;
    throw new Error(`unexpected MessagePack byte ${b.toString(16)}`);
  };
  const head = bytes[at++];
  if (head < 0x80 || head > 0x8f) throw new Error("not a small map");
  const out = {};
  for (let i = 0; i < head - 0x80; i++) out[value()] = value();
  return out;
}
