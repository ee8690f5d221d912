#!/usr/bin/env python3
"""Renders the scaling benchmark (benches/benches/scaling.rs) as PNGs in benchmarks/ and prints a
markdown table, from criterion's output in target/criterion. Never drawn by hand: rerun
`scripts/bench-scaling.sh` to regenerate both."""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent
crit = root / "target" / "criterion"
out = root / "benchmarks"

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GROUPS = {
    "flags": "flags per ruleset (evaluating one flag)",
    "rules": "rules per flag (last rule matches)",
    "members": "member-segment size (lookup miss)",
    "attributes": "context attributes (rules read 3)",
}


def estimate(group, engine, size):
    f = crit / group / engine / str(size) / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["mean"]["point_estimate"]


def sizes(group, engine):
    d = crit / group / engine
    if not d.exists():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def main():
    out.mkdir(exist_ok=True)
    rows = []
    for group, title in GROUPS.items():
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for engine in ("native", "wasmtime"):
            xs = sizes(group, engine)
            ys = [estimate(group, engine, x) for x in xs]
            if xs:
                ax.plot(xs, ys, marker="o", label=engine)
            for x, y in zip(xs, ys):
                rows.append((group, engine, x, y))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("ns per evaluation")
        ax.set_title(f"flagforge: cost vs {group}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"scaling-{group}.png")
        plt.close(fig)
    print("| group | size | native ns | wasmtime ns | wasmtime/native |")
    print("|---|---:|---:|---:|---:|")
    by = {}
    for g, e, x, y in rows:
        by.setdefault((g, x), {})[e] = y
    for (g, x), v in sorted(by.items()):
        n, w = v.get("native"), v.get("wasmtime")
        ratio = f"{w / n:.2f}×" if n and w else "n/a"
        print(f"| {g} | {x} | {n:.0f} | {w:.0f} | {ratio} |" if n and w else f"| {g} | {x} | - | - | n/a |")
    # Throughput with threads: elements per second.
    t = {}
    for threads in (1, 2):
        f = crit / "threads" / "wasmtime" / str(threads) / "new" / "estimates.json"
        if f.exists():
            ns = json.loads(f.read_text())["mean"]["point_estimate"]
            t[threads] = 20_000 * threads / (ns / 1e9)
    if 1 in t and 2 in t:
        print(f"\nthreads: 1 → {t[1]:,.0f} evaluations/s, 2 → {t[2]:,.0f}/s ({t[2] / t[1]:.2f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
