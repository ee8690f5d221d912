#!/usr/bin/env bash
# The whole test suite, from a fresh clone: setup, formatting, lints, every Rust test (in
# release mode, sharing the build with the CLI), then the rule test cases of every example
# ruleset and of the shared corpus through the real `flagforge` binary; the JS bindings' corpus
# run in Node and headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --for-tests

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p flagforge-bindings --target wasm32-unknown-unknown -- -D warnings
cargo clippy --locked -p flagforge-embed --all-features --all-targets -- -D warnings
# A snapshot-only embedder must not build librdkafka.
if cargo tree --locked -p flagforge-embed -e normal | grep -q rdkafka; then
  echo "flagforge-embed without features depends on rdkafka" >&2; exit 1
fi
# Hosts evaluate only through the module: none links the evaluator (ARCHITECTURE.md).
for host in wasm-host flagforge-kafka flagforge-daemon flagforge-embed flagforge-decision; do
  if cargo tree --locked -p "$host" --all-features -e normal | grep -q '^.*evaluator-core '; then
    echo "$host depends on evaluator-core; hosts must evaluate through the module only" >&2; exit 1
  fi
done

step "cargo build --release"
cargo build --release --locked -p flagforge-cli

step "cargo test --release --workspace"
cargo test --release --locked --workspace --all-targets
cargo test --release --locked --workspace --doc
# The embedder façade with Kafka and the OpenFeature provider (`open-feature` crate).
cargo test --release --locked -p flagforge-embed --all-features --all-targets
cargo test --release --locked -p flagforge-embed --all-features --doc

step "JS bindings: the corpus in Node and headless Chromium"
scripts/test-bindings.sh

step "Python host: the corpus through wasmtime-py, the OpenFeature providers"
(cd python && ../.tools/venv/bin/python -m unittest discover -s tests -v)

# Every ruleset directory (one holding *.yaml rule files) of the examples, then the corpus.
for dir in rules-examples/*/ corpus/; do
  compgen -G "${dir}*.yaml" >/dev/null || continue
  step "flagforge test ${dir%/}"
  target/release/flagforge test "${dir%/}"
done
