#!/usr/bin/env python3
"""Prints per-evaluation times and wasmtime/native ratios from `cargo bench --bench eval`.

Reads target/criterion/<group>/<path>/new/estimates.json (criterion's mean). Each benchmark
iteration evaluates every context in rules-examples/checkout/demo/, so times are divided by
that count.
"""
import json
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
crit = root / "target" / "criterion"
scenarios = len(re.findall(r"^\s*- name:", (root / "rules-examples/checkout/demo/scenarios.yaml").read_text(), re.M))


def mean_ns(group, path):
    f = crit / group / path / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["mean"]["point_estimate"] / scenarios


groups = sorted(p.name for p in crit.iterdir() if p.is_dir() and p.name != "report") if crit.exists() else []
if not groups:
    sys.exit("no criterion results: run `cargo bench -p flagforge-benches --bench eval` first")
print(f"per evaluation, mean of {scenarios} contexts")
print(f"{'benchmark':<42}{'native':>10}{'native_bytes':>14}{'wasmtime':>11}{'wasm/native':>13}{'wasm/native_bytes':>19}")
for g in groups:
    n, nb, w = mean_ns(g, "native"), mean_ns(g, "native_bytes"), mean_ns(g, "wasmtime")
    if n is None or w is None:
        continue
    fmt = lambda v: f"{v:>9.0f}ns" if v is not None else f"{'-':>11}"
    nbr = f"{w / nb:>18.2f}x" if nb else f"{'-':>19}"
    print(f"{g:<42}{fmt(n)}{fmt(nb):>14}{fmt(w)}{w / n:>12.2f}x{nbr}")
