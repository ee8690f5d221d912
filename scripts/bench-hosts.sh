#!/usr/bin/env bash
# Evaluation time of the same module and contexts in wasmtime, Node and headless Chromium, in
# one run (benches/benches/hosts.rs), plus the npm package size. Builds the package first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --for-tests
scripts/build-bindings.sh
(cd bindings/tests && npm ci --no-audit --no-fund --loglevel=error)
cargo bench --locked -p flagforge-benches --bench hosts
printf '\nnpm package (bindings/pkg, web + node builds): %s bytes as a gzipped tarball; web build alone: %s bytes gzipped (%s)\n' \
  "$(cd bindings/pkg && npm pack --dry-run --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["size"])')" \
  "$(tar -C bindings/pkg -cf - index.web.js index.d.ts live.js package.json web | gzip -9 | wc -c)" \
  "wasm $(gzip -9c bindings/pkg/web/flagforge_bg.wasm | wc -c) + JS glue"
