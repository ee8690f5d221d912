"""The host-conformance corpus (corpus/host/cases.json) through wasmtime-py: every hostile
module is refused with the code every host gives, every hostile call and context answers the
reason, code and variant every host gives."""

import json
import unittest

from flagforge import FlagModule, Limits, LoadError, decode_result
from support import ROOT, module_bytes


def corpus() -> dict:
    return json.loads((ROOT / "corpus/host/cases.json").read_text())


def context(case: dict) -> dict:
    ctx = dict(case["context"])
    for name, depth in case.get("deep", {}).items():
        v = "x"
        for _ in range(depth):
            v = [v]
        ctx[name] = v
    for name, size in case.get("oversized", {}).items():
        ctx[name] = "x" * size
    return ctx


def differs(case: dict, r) -> str | None:
    got = (r.reason, r.error_code, r.variant)
    want = (case["reason"], case.get("code"), case.get("variant"))
    return None if got == want else f"{case['name']}: got {got}, want {want}"


class HostConformance(unittest.TestCase):
    def test_the_corpus_gives_every_hosts_codes(self):
        c = corpus()
        wrong = []
        for m in c["modules"]:
            try:
                FlagModule(bytes.fromhex(m["hex"]))
                got = None
            except LoadError as e:
                got = e.reason
            if got != m["load"]:
                wrong.append(f"{m['name']}: got {got}, want {m['load']}")
        hostile = FlagModule(bytes.fromhex(c["hostile"]["hex"]), Limits(fuel_per_call=5_000_000, memory_bytes=16 << 20))
        for case in c["hostile"]["calls"]:
            wrong.append(differs(case, hostile.evaluate(case["flag"], {})))
        checkout = FlagModule(module_bytes("checkout"))
        for case in c["contexts"]["cases"]:
            wrong.append(differs(case, checkout.evaluate(case["flag"], context(case))))
        for case in c["bytes"]["cases"]:
            raw = checkout.evaluate_bytes(case["flag"], bytes.fromhex(case["hex"]))
            r = decode_result(raw)
            wrong.append(differs(case, r))
        wrong = [w for w in wrong if w]
        self.assertEqual(wrong, [])
        n = len(c["modules"]) + len(c["hostile"]["calls"]) + len(c["contexts"]["cases"]) + len(c["bytes"]["cases"])
        print(f"python: {n} host-conformance cases, 0 differ")


if __name__ == "__main__":
    unittest.main()
