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
target/release/flagforge build rules-examples/checkout --audience browser \
  -o target/conformance/checkout.browser.wasm >/dev/null
(cd bindings/tests && npm ci --no-audit --no-fund --loglevel=error)
# The packages as npm would publish them: packed, then installed from the tarballs (not
# linked), so a missing file or export fails here.
rm -rf target/npm && mkdir -p target/npm
for p in pkg pkg-openfeature-server pkg-openfeature-web; do
  (cd "bindings/$p" && npm pack --silent --pack-destination ../../target/npm >/dev/null)
done
(cd bindings/tests && npm install --no-save --no-audit --no-fund --loglevel=error ../../target/npm/*.tgz)
(cd examples/bff-node && npm ci --no-audit --no-fund --loglevel=error)
node --test --test-reporter=spec bindings/tests/node.test.js bindings/tests/chromium.test.js \
  bindings/tests/live.test.js bindings/tests/bff.test.js bindings/tests/openfeature.test.js
