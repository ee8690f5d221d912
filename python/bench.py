"""OpenFeature provider overhead in Python, side by side in one run: FlagModule.evaluate (bare)
vs the openfeature-sdk client through flagforge.openfeature.FlagforgeProvider. Interleaved
rounds, median microseconds per evaluation.
Run: .tools/venv/bin/python python/bench.py (after scripts/test.sh built target/conformance)."""

import statistics
import time
from pathlib import Path

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from flagforge import FlagModule
from flagforge.openfeature import FlagforgeProvider

FLAG, N, ROUNDS = "CheckoutExperienceVariant", 2000, 15
module = FlagModule((Path(__file__).resolve().parents[1] / "target/conformance/checkout.wasm").read_bytes())
api.set_provider(FlagforgeProvider(module))
client = api.get_client()
ctx, of_ctx = {"targetingKey": "c-1001"}, EvaluationContext("c-1001")
assert module.evaluate(FLAG, ctx).variant == "one_page"
assert client.get_string_details(FLAG, "", of_ctx).variant == "one_page"
bare, sdk = [], []
for _ in range(ROUNDS):
    t = time.perf_counter_ns()
    for _ in range(N):
        module.evaluate(FLAG, ctx)
    bare.append((time.perf_counter_ns() - t) / N)
    t = time.perf_counter_ns()
    for _ in range(N):
        client.get_string_details(FLAG, "", of_ctx)
    sdk.append((time.perf_counter_ns() - t) / N)
b, s = statistics.median(bare), statistics.median(sdk)
print(f"python: one flag ({FLAG}, targetingKey only), median of {ROUNDS} rounds x {N}")
print(f"  bare FlagModule.evaluate                {b / 1000:8.1f} us")
print(f"  openfeature-sdk client + provider       {s / 1000:8.1f} us  ({s / b:.2f}x, +{(s - b) / 1000:.1f} us)")
