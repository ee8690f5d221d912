"""An OpenFeature provider (``openfeature-sdk``) evaluating a flagforge module in-process.

    from openfeature import api
    from flagforge import FlagModule
    from flagforge.openfeature import FlagforgeProvider

    api.set_provider(FlagforgeProvider(FlagModule(open("checkout.wasm", "rb").read())))
    client = api.get_client()
    client.get_string_value("CheckoutExperienceVariant", "classic",
                            EvaluationContext(targeting_key="c-1001"))

``targeting_key`` travels as ``targetingKey``; the module binds it to the ruleset's targeting
key attribute unless the context sets that attribute (an explicit attribute wins). A failed
evaluation reports its error code (the SDK returns the caller's default and runs error hooks);
the wrong getter is ``TYPE_MISMATCH``. Flag metadata: ``ruleset``, ``sha256``.
``set_module`` swaps in a new version and emits ``PROVIDER_CONFIGURATION_CHANGED`` (with the
flags that changed when you pass them, else every flag).
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping, Sequence

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from .engine import TARGETING_KEY, FlagModule

_TYPES = {
    bool: "boolean",
    str: "string",
    int: "integer",
    float: "float",
}


def _flag_type(info: Mapping[str, Any]) -> str:
    values = [v["value"] for v in info["variants"]]
    first = values[0] if values else None
    if isinstance(first, bool):
        return "boolean"
    if isinstance(first, str):
        return "string"
    if isinstance(first, (int, float)):
        if info.get("float") or any(isinstance(v, float) for v in values):
            return "float"
        return "integer"
    return "object"


def _context(ctx: EvaluationContext | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ctx is None:
        return out
    if ctx.targeting_key is not None:
        out[TARGETING_KEY] = ctx.targeting_key
    for k, v in ctx.attributes.items():
        if isinstance(v, datetime.datetime):
            v = v.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        out[k] = v
    return out


class FlagforgeProvider(AbstractProvider):
    """Evaluates a :class:`FlagModule` in-process."""

    def __init__(self, module: FlagModule) -> None:
        super().__init__()
        self._module = module

    @property
    def module(self) -> FlagModule:
        return self._module

    def set_module(self, module: FlagModule, flags_changed: list[str] | None = None) -> list[str]:
        """Serves a new version and emits ``PROVIDER_CONFIGURATION_CHANGED``. ``flags_changed``
        is what the publisher's semantic diff says (e.g. a host's ``x-flagforge-flags-changed``
        header for the version before); without it every flag of either version is named: a
        rule change is not visible in the manifest, so anything narrower could miss one."""
        old = self._module
        self._module = module
        if flags_changed is None:
            flags_changed = [] if old.sha256 == module.sha256 else sorted(set(old.flags) | set(module.flags))
        self.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=flags_changed, metadata={"sha256": module.sha256})
        )
        return flags_changed

    def get_metadata(self) -> Metadata:
        return Metadata(name="flagforge")

    def _resolve(self, key: str, want: tuple[str, ...], default: Any, ctx: EvaluationContext | None) -> FlagResolutionDetails:
        module = self._module
        meta = {"ruleset": module.ruleset, "sha256": module.sha256}
        info = module.flags.get(key)
        if info is None:
            return FlagResolutionDetails(default, ErrorCode.FLAG_NOT_FOUND, f"flag `{key}` is not defined", Reason.ERROR, flag_metadata=meta)
        kind = _flag_type(info)
        if kind not in want:
            return FlagResolutionDetails(default, ErrorCode.TYPE_MISMATCH, f"flag `{key}` is {kind}", Reason.ERROR, flag_metadata=meta)
        r = module.evaluate(key, _context(ctx))
        # The flag's own metadata, then the provider's (ruleset, sha256), which win.
        meta = {**(r.metadata or {}), **meta}
        if r.error_code is not None:
            return FlagResolutionDetails(default, ErrorCode(r.error_code), r.error_message, Reason.ERROR, r.variant, meta)
        value = r.value
        if "float" in want and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return FlagResolutionDetails(value, None, None, Reason(r.reason), r.variant, meta)

    def resolve_boolean_details(self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, ("boolean",), default_value, evaluation_context)

    def resolve_string_details(self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, ("string",), default_value, evaluation_context)

    def resolve_integer_details(self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, ("integer",), default_value, evaluation_context)

    def resolve_float_details(self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, ("float", "integer"), default_value, evaluation_context)

    def resolve_object_details(self, flag_key: str, default_value: Sequence[Any] | Mapping[str, Any], evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._resolve(flag_key, ("object",), default_value, evaluation_context)
