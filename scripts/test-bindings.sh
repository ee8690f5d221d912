#!/usr/bin/env bash
# The JS bindings' identity tests: build the npm package (scripts/build-bindings.sh), build the
# corpus and example modules with the release `flagforge`, install the tests' npm dependencies
# from their lock file, then run the shared corpus in Node and in headless Chromium, comparing
# result bytes with the Rust hosts' golden bytes, and a live update (broker, `flagforge host`, the
# browser example in Chromium). Expects `cargo build --release -p
# flagforge-cli` and `scripts/setup.sh --for-tests` to have run (scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-bindings.sh
mkdir -p target/conformance
target/release/flagforge build corpus -o target/conformance/corpus.wasm >/dev/null
target/release/flagforge build rules-examples/checkout -o target/conformance/checkout.wasm >/dev/null
(cd bindings/tests && npm ci --no-audit --no-fund --loglevel=error)
(cd examples/bff-node && npm ci --no-audit --no-fund --loglevel=error)
node --test --test-reporter=spec bindings/tests/node.test.js bindings/tests/chromium.test.js \
  bindings/tests/live.test.js bindings/tests/bff.test.js
