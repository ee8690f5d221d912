"""The shared corpus through wasmtime-py: every golden case of the corpus and the checkout
example gives exactly the result bytes the Rust hosts recorded (corpus/golden/), and the
canonical context encoding gives the golden bytes (corpus/golden/encoding.json)."""

import hashlib
import json
import unittest

from flagforge import FlagModule, Limits, encode_context
from support import ROOT, golden, module_bytes


class Corpus(unittest.TestCase):
    def test_golden_cases_give_the_golden_result_bytes(self):
        for name in ("corpus", "checkout"):
            g = golden(name)
            module = FlagModule(module_bytes(name))
            disagreements = []
            for case in g["cases"]:
                ctx = encode_context(case["context"])
                for explain in (False, True):
                    if case["flag"] is None:
                        out = module.evaluate_all_bytes(ctx, explain)
                    else:
                        out = module.evaluate_bytes(case["flag"], ctx, explain)
                    got = hashlib.sha256(out).hexdigest() if explain else out.hex()
                    want = case["explained_sha256"] if explain else case["result"]
                    if got != want:
                        disagreements.append(f"{case['name']} (explain={explain}): {got} != {want}")
            self.assertEqual(disagreements, [], name)
            print(f"python: {name}: {len(g['cases'])} cases, 0 disagreements")

    def test_the_canonical_encoding_gives_the_golden_bytes(self):
        contexts = json.loads((ROOT / "corpus/encoding/contexts.json").read_text())["contexts"]
        want = {c["name"]: c["bytes"] for c in golden("encoding")["contexts"]}
        for c in contexts:
            self.assertEqual(encode_context(c["context"]).hex(), want[c["name"]], c["name"])

    def test_a_module_out_of_fuel_answers_the_flags_on_error_variant(self):
        module = FlagModule(module_bytes("checkout"), Limits(fuel_per_call=50))
        r = module.evaluate("FraudEngineRoutingMode", {"market": "IT"})
        self.assertEqual((r.reason, r.error_code, r.variant), ("ERROR", "GENERAL", "engine_v2"))
        self.assertIn("fuel", r.error_message)
        # The instance was discarded; a normal budget answers again.
        healthy = FlagModule(module_bytes("checkout"))
        self.assertEqual(healthy.evaluate("FraudEngineRoutingMode", {"market": "IT"}).variant, "engine_v2")

    def test_hostile_modules_are_refused_with_a_reason(self):
        import wasmtime

        from flagforge import LoadError
        cases = {
            b"not wasm": "bad_magic",
            b"\0asm\x01\0\0\0": "missing_export",
            bytes(wasmtime.wat2wasm('(module (import "env" "f" (func)))')): "imports",
            b"\0asm\x01\0\0\0\x99": "invalid_module",
        }
        for data, reason in cases.items():
            with self.assertRaises(LoadError) as e:
                FlagModule(data)
            self.assertEqual(e.exception.reason, reason, data)


if __name__ == "__main__":
    unittest.main()
