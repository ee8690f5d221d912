"""OpenFeature in Python with the real SDK (openfeature-sdk from PyPI):

- flagforge's in-process provider gives the golden answers of the checkout cases, and a client
  setting only `targeting_key` gets the buckets of one setting `customer_id`;
- openfeature-provider-ofrep against a running `flagforge host` (tansu broker) gives what
  `flagforge eval` gives, and a wrong-typed context takes the SDK's error path with
  TYPE_MISMATCH."""

import json
import time
import unittest

import msgpack
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.hook import Hook

from flagforge import FlagModule
from flagforge.openfeature import FlagforgeProvider, _flag_type
from support import Host, cli, golden, module_bytes


class Recorder(Hook):
    def __init__(self):
        self.errors, self.afters = [], []

    def error(self, hook_context, exception, hints):
        self.errors.append(exception)

    def after(self, hook_context, details, hints):
        self.afters.append(details)


def ask(client, flag, kind, ctx):
    getter = {
        "boolean": client.get_boolean_details,
        "string": client.get_string_details,
        "integer": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }[kind]
    default = {"boolean": False, "string": "", "integer": 0, "float": 0.0, "object": {}}[kind]
    d = getter(flag, default, ctx)
    if d.error_code is not None:
        return (None, None, "ERROR", str(d.error_code))
    return (d.value, d.variant, str(d.reason), None)


def split(context):
    """OpenFeature's context: `targetingKey` apart, the rest as attributes."""
    attrs = dict(context)
    return EvaluationContext(targeting_key=attrs.pop("targetingKey", None), attributes=attrs)


class InProcess(unittest.TestCase):
    def test_checkout_cases_give_the_golden_answers_and_targeting_key_buckets_alike(self):
        module = FlagModule(module_bytes("checkout"))
        api.set_provider(FlagforgeProvider(module), domain="inprocess")
        client = api.get_client(domain="inprocess")
        checked = by_key = 0
        for case in golden("checkout")["cases"]:
            if case["flag"] is None:
                continue
            info = module.flags.get(case["flag"])
            kind = _flag_type(info) if info else "boolean"
            g = msgpack.unpackb(bytes.fromhex(case["result"]), raw=False)
            if "error_code" in g:
                want = (None, None, "ERROR", g["error_code"])
            else:
                value = float(g["value"]) if kind == "float" else g["value"]
                want = (value, g.get("variant"), g["reason"], None)
            got = ask(client, case["flag"], kind, split(case["context"]))
            self.assertEqual(got, want, case["name"])
            if kind == "float" and got[0] is not None:
                self.assertIsInstance(got[0], float, case["name"])
            checked += 1
            if isinstance(case["context"].get("customer_id"), str):
                ctx = dict(case["context"])
                ctx["targetingKey"] = ctx.pop("customer_id")
                self.assertEqual(ask(client, case["flag"], kind, split(ctx)), got, case["name"] + " (targetingKey)")
                by_key += 1
        self.assertGreaterEqual(by_key, 10)
        print(f"python provider: {checked} checkout cases, {by_key} also by targeting_key alone")

    def test_errors_take_the_sdk_error_path(self):
        module = FlagModule(module_bytes("checkout"))
        api.set_provider(FlagforgeProvider(module), domain="errors")
        hook = Recorder()
        client = api.get_client(domain="errors")
        client.add_hooks([hook])
        d = client.get_float_details("FreeShippingThreshold", 1.5, EvaluationContext(attributes={"customer_id": 7, "market": "FR"}))
        self.assertEqual((d.value, d.error_code), (1.5, ErrorCode.TYPE_MISMATCH))
        d = client.get_boolean_details("CheckoutExperienceVariant", False, EvaluationContext("c-1"))
        self.assertEqual(d.error_code, ErrorCode.TYPE_MISMATCH)
        self.assertEqual(len(hook.errors), 2)
        d = client.get_string_details("CheckoutExperienceVariant", "", EvaluationContext("c-1001"))
        self.assertEqual(d.value, "one-page")
        self.assertEqual(d.flag_metadata["ruleset"], "checkout")
        self.assertEqual(d.flag_metadata["sha256"], module.sha256)
        # A flag's own metadata (`metadata:` in its rule file) comes with it.
        d = client.get_float_details("FreeShippingThreshold", 1.5, EvaluationContext(attributes={"market": "IT"}))
        self.assertEqual((d.value, d.flag_metadata["policy_doc"], d.flag_metadata["reviewed_quarterly"]), (50.0, "PRC-7", True))
        self.assertEqual(d.flag_metadata["ruleset"], "checkout")

    def test_a_new_module_is_announced(self):
        from openfeature.event import ProviderEvent
        provider = FlagforgeProvider(FlagModule(module_bytes("checkout")))
        api.set_provider(provider, domain="swap")
        seen = []
        api.get_client(domain="swap").add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, lambda d: seen.append(d.flags_changed))
        corpus = FlagModule(module_bytes("corpus"))
        provider.set_module(corpus, ["StaticFlag"])
        provider.set_module(FlagModule(module_bytes("checkout")))
        for _ in range(100):  # handlers may run on the SDK's own thread
            if len(seen) >= 2:
                break
            time.sleep(0.01)
        self.assertEqual(len(seen), 2, seen)
        self.assertEqual(seen[0], ["StaticFlag"])
        self.assertIn("FraudEngineRoutingMode", seen[1])
        self.assertIn("StaticFlag", seen[1])


class Ofrep(unittest.TestCase):
    def test_the_ofrep_provider_against_flagforge_host(self):
        with Host() as host:
            api.set_provider(OFREPProvider(host.url), domain="ofrep")
            client = api.get_client(domain="ofrep")
            module = FlagModule(host.module.read_bytes())
            checked = 0
            for case in golden("checkout")["cases"]:
                if case["flag"] is None or case["flag"] not in module.flags:
                    continue
                kind = _flag_type(module.flags[case["flag"]])
                # The host supplies `now` when a context has none; so does `flagforge eval`
                # with --now: give both the case's own (or a fixed) time.
                ctx = dict(case["context"])
                ctx.setdefault("now", "2026-12-01T00:00:00Z")
                expect = json.loads(cli("eval", str(host.module), "--flag", case["flag"], "--context", json.dumps(ctx)))
                if "errorCode" in expect:
                    want = (None, None, "ERROR", expect["errorCode"])
                else:
                    want = (expect["value"], expect.get("variant"), expect["reason"], None)
                got = ask(client, case["flag"], kind, split(ctx))
                self.assertEqual(got, want, case["name"])
                checked += 1
            self.assertGreaterEqual(checked, 40)
            print(f"python OFREP provider: {checked} checkout cases equal `flagforge eval`")
            # A wrong-typed context: the SDK's error path with TYPE_MISMATCH.
            hook = Recorder()
            client.add_hooks([hook])
            d = client.get_float_details("FreeShippingThreshold", 1.5, EvaluationContext(attributes={"customer_id": 7, "market": "FR"}))
            self.assertEqual((d.value, d.error_code), (1.5, ErrorCode.TYPE_MISMATCH))
            self.assertEqual(len(hook.errors), 1)
            # A float flag's value is a float to the SDK.
            d = client.get_float_details("FreeShippingThreshold", 1.5, EvaluationContext("c-2002", {"market": "DE"}))
            self.assertEqual((d.value, d.variant, d.error_code), (50.0, "standard", None))


if __name__ == "__main__":
    unittest.main()
