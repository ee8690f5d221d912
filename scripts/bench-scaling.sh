#!/usr/bin/env bash
# The scaling benchmark and its plots: installs matplotlib into .tools/py (once), runs
# `cargo bench --bench scaling`, then scripts/plot-scaling.py renders benchmarks/scaling-*.png
# and prints the table recorded in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.tools/py
if ! PYTHONPATH=$py python3 -c 'import matplotlib' 2>/dev/null; then
  echo "[bench] installing matplotlib into $py" >&2
  python3 -m pip install --quiet --target "$py" matplotlib==3.11.2
fi
cargo bench --locked -p flagforge-benches --bench scaling
PYTHONPATH=$py python3 scripts/plot-scaling.py
