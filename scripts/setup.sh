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

log "ready: $(rustc --version), $(wasm-opt --version)"
