#!/usr/bin/env bash
# Builds the npm package of the JS/TS bindings into bindings/pkg/: the package's JavaScript
# (the runtime in bindings/js: FlagEngine, LiveFlags; no build step), and for its
# "flagforge/decision" entry the bindings crate for wasm32 through wasm-bindgen, for the web
# (ES module, bindings/pkg/web) and for Node (CommonJS, bindings/pkg/node). Installs wasm-bindgen-cli at exactly the version in Cargo.lock (once per
# machine, kept in ~/.cache/flagforge).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[bindings] %s\n' "$*" >&2; }

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { log "wasm-bindgen not found in Cargo.lock"; exit 1; }
cache="${FLAGFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flagforge}/wasm-bindgen-$version"
if [ ! -x "$cache/bin/wasm-bindgen" ]; then
  log "installing wasm-bindgen-cli $version into $cache (a few minutes, once)"
  # Its lock file names a webpki-roots release the registry mirror here lacks, so try the
  # lock file first and resolve afresh if that fails.
  CARGO_TARGET_DIR="$cache.build" cargo install --quiet wasm-bindgen-cli --version "$version" \
    --locked --root "$cache" ||
    CARGO_TARGET_DIR="$cache.build" cargo install --quiet wasm-bindgen-cli --version "$version" \
      --root "$cache"
  rm -rf "$cache.build"
fi
bindgen="$cache/bin/wasm-bindgen"

log "cargo build -p flagforge-bindings (wasm32, profile bindings)"
cargo build --quiet --locked -p flagforge-bindings --target wasm32-unknown-unknown --profile bindings
wasm=target/wasm32-unknown-unknown/bindings/flagforge_bindings.wasm

# No wasm-opt pass here: Debian's binaryen 108 rewrites the externref table wasm-bindgen
# relies on (instantiation then fails in Node and Chromium).
rm -rf bindings/pkg
for target in web nodejs; do
  out=bindings/pkg/$([ $target = nodejs ] && echo node || echo web)
  "$bindgen" "$wasm" --target "$target" --out-dir "$out" --out-name flagforge
done
cp bindings/js/* bindings/pkg/
# wasm-bindgen's Node build is CommonJS inside a "type": "module" package.
echo '{ "type": "commonjs" }' > bindings/pkg/node/package.json
cp bindings/package.json bindings/README.md bindings/pkg/
# The OpenFeature providers, each its own npm package on `flagforge`.
for p in server web; do
  rm -rf "bindings/pkg-openfeature-$p"
  cp -r "bindings/providers/$p" "bindings/pkg-openfeature-$p"
done
runtime=0
for f in index.js engine.js msgpack.js sha256.js live.js; do
  runtime=$((runtime + $(gzip -9c "bindings/pkg/$f" | wc -c)))
done
log "built bindings/pkg ($(du -sh bindings/pkg | cut -f1)): runtime $runtime bytes gzipped;" \
  "flagforge/decision wasm $(gzip -9c bindings/pkg/web/flagforge_bg.wasm | wc -c) bytes gzipped"
