"""flagforge for Python: the fifth host. Runs the same module bytes as every other host (Rust
with wasmtime, Node and browsers through the npm package) with wasmtime from PyPI, under the
same fuel and memory limits, and offers an OpenFeature provider (``flagforge.openfeature``).

    from flagforge import FlagModule
    module = FlagModule(open("checkout.wasm", "rb").read())
    module.evaluate("CheckoutExperienceVariant", {"targetingKey": "c-1001"})
"""

from .engine import (
    TARGETING_KEY,
    ContextError,
    FlagModule,
    Limits,
    LoadError,
    Resolution,
    decode_result,
    encode_context,
)

__all__ = [
    "TARGETING_KEY",
    "ContextError",
    "FlagModule",
    "Limits",
    "LoadError",
    "Resolution",
    "decode_result",
    "encode_context",
]
