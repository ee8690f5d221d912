#!/usr/bin/env bash
# The main job on the embedded default: set up, build flagforge, build the example rulesets
# into modules and print the decisions for realistic contexts, evaluated in wasmtime.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p flagforge-cli
exec target/release/flagforge demo --examples rules-examples "$@"
