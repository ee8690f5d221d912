#!/usr/bin/env bash
# Coverage-guided fuzzing of the entry points that take untrusted input (fuzz/fuzz_targets/):
# rule sources, context bytes, envelopes and audit records, decision headers, module bytes.
# Each target runs for FUZZ_SECONDS (default 60); the run fails if any target finds a crash.
# Crashers go to fuzz/artifacts/TARGET/; a crash fixed in the code becomes a regression case by
# copying it to fuzz/regressions/TARGET/ (replayed at the start of every run).
#
# cargo-fuzz drives libFuzzer, whose coverage flags need a nightly compiler for the sanitizers;
# with `--sanitizer none` the remaining flags are accepted by the stable toolchain once
# RUSTC_BOOTSTRAP=1 unlocks cargo-fuzz's `-Z` options (checked here with Rust 1.95).
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh envelope
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(rule_source context_bytes envelope decision_header module_bytes)

cache="${FLAGFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flagforge}/cargo-fuzz-0.13.2"
if [ ! -x "$cache/bin/cargo-fuzz" ]; then
  echo "[fuzz] installing cargo-fuzz 0.13.2 into $cache (once)" >&2
  cargo install --quiet --locked cargo-fuzz --version 0.13.2 --root "$cache"
fi
export PATH="$cache/bin:$PATH"

# Seeds: the rule files of the examples and the corpus, the checkout module, small contexts.
seed() { mkdir -p "fuzz/corpus/$1"; }
seed rule_source; cp corpus/*.yaml corpus/invalid/*.yaml rules-examples/checkout/*.yaml fuzz/corpus/rule_source/ 2>/dev/null || true
seed context_bytes; printf '\x80' > fuzz/corpus/context_bytes/empty
printf '\x82\xa6market\xa2FR\xa3age\x12' > fuzz/corpus/context_bytes/small
seed envelope; seed decision_header; seed module_bytes
if [ ! -s fuzz/corpus/module_bytes/checkout.wasm ]; then
  cargo build --release --locked -q -p flagforge-cli
  target/release/flagforge build rules-examples/checkout -o fuzz/corpus/module_bytes/checkout.wasm >/dev/null
fi

# Only cargo-fuzz's builds (in fuzz/target) see RUSTC_BOOTSTRAP: set for the main build above,
# it would invalidate every artifact in target/.
export RUSTC_BOOTSTRAP=1
status=0
for t in "${targets[@]}"; do
  echo "==> fuzz $t (${seconds}s)"
  cargo fuzz build --sanitizer none -O "$t"
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    echo "[fuzz] replaying fuzz/regressions/$t/"
    cargo fuzz run --sanitizer none -O "$t" fuzz/regressions/"$t"/* -- -runs=0
  fi
  mkdir -p "fuzz/artifacts/$t"
  if ! cargo fuzz run --sanitizer none -O "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=1048576 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" 2>"fuzz/artifacts/$t.log"; then
    echo "[fuzz] $t FOUND A CRASH: see fuzz/artifacts/$t/ and fuzz/artifacts/$t.log" >&2
    tail -40 "fuzz/artifacts/$t.log" >&2
    status=1
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added|Done " "fuzz/artifacts/$t.log" | tr '\n' ' '; echo
done
exit $status
