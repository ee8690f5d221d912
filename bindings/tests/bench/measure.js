// Timing loop shared by the Node and Chromium benchmarks (and mirrored by the Rust one in
// benches/benches/hosts.rs): warm up, then 5 batches of ~100 ms; the median ns per operation.
export async function measureAll(FlagEngine, moduleBytes, data, now) {
  const engine = await FlagEngine.load(moduleBytes);
  const encoded = data.contexts.map((c) => FlagEngine.encodeContext(c));
  const out = {};
  for (const flag of data.flags) {
    let i = 0;
    out[`one:${flag}`] = time(now, () => engine.evaluate(flag, data.contexts[i++ % data.contexts.length]));
    let j = 0;
    out[`one-bytes:${flag}`] = time(now, () => engine.evaluateBytes(flag, encoded[j++ % encoded.length]));
  }
  let k = 0;
  out.all = time(now, () => engine.evaluateAll(data.contexts[k++ % data.contexts.length]));
  return out;
}

function time(now, op) {
  for (let i = 0; i < 2000; i++) op();
  // Size a batch to ~100 ms.
  let n = 1000;
  for (;;) {
    const t = now();
    for (let i = 0; i < n; i++) op();
    const ms = now() - t;
    if (ms > 50) {
      n = Math.max(1, Math.round((n * 100) / ms));
      break;
    }
    n *= 4;
  }
  const batches = [];
  for (let b = 0; b < 5; b++) {
    const t = now();
    for (let i = 0; i < n; i++) op();
    batches.push(((now() - t) * 1e6) / n);
  }
  batches.sort((a, b) => a - b);
  return batches[2];
}
