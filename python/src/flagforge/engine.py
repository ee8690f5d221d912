"""The flagforge module ABI (ABI.md) on wasmtime: load, limit, marshal. No evaluation here.

A module is validated (size, imports, exports, ABI version, manifest) before it serves; every
call runs with a fuel budget and a memory cap; a trap or a limit hit discards the instance and
answers the flag's ``on_error`` variant with reason ``ERROR`` (as ``wasm-host`` does).
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import msgpack
import wasmtime

ABI_VERSION = 1
REQUIRED_EXPORTS = (
    "memory",
    "ff_abi_version",
    "ff_alloc",
    "ff_free",
    "ff_evaluate",
    "ff_evaluate_all",
    "ff_manifest",
)
OPT_EXPLAIN = 1
MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# OpenFeature's key for the subject; the module maps it to the ruleset's targeting key.
TARGETING_KEY = "targetingKey"


@dataclass(frozen=True)
class Limits:
    """What one module may use (the defaults of ``wasm_host::Limits``)."""

    fuel_per_call: int = 50_000_000
    fuel_per_load: int = 1_000_000_000
    memory_bytes: int = 64 * 1024 * 1024
    max_module_bytes: int = 8 * 1024 * 1024
    max_context_bytes: int = 1024 * 1024


class LoadError(Exception):
    """The module was refused; ``reason`` names the check (``imports``, ``exports``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ContextError(ValueError):
    """A context value the canonical encoding refuses (NaN, too deep, integer out of range)."""


def _canonical(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not I64_MIN <= value <= I64_MAX:
            raise ContextError(f"integer {value} is out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContextError("non-finite number")
        if value == int(value) and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if depth >= MAX_DEPTH:
        raise ContextError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise ContextError("map keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        return {k: _canonical(value[k], depth + 1) for k in keys}
    raise ContextError(f"unsupported value type {type(value).__name__}")


def encode_context(context: Mapping[str, Any]) -> bytes:
    """The canonical MessagePack encoding of a context (ABI.md, "Context"): keys in UTF-8 byte
    order, shortest integers, integral numbers within 2^53 as integers, NaN refused."""
    if not isinstance(context, Mapping):
        raise ContextError("context must be a mapping")
    return msgpack.packb(_canonical(context, 0), use_bin_type=True)


@dataclass
class Resolution:
    """One flag's answer in OpenFeature's vocabulary."""

    key: str
    value: Any
    reason: str
    variant: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    explain: Any = None


@dataclass
class _Instance:
    store: wasmtime.Store
    memory: wasmtime.Memory
    exports: dict = field(default_factory=dict)


class _Trapped(Exception):
    pass


class FlagModule:
    """A validated module: evaluate flags from many threads (one instance, serialised)."""

    def __init__(self, module_bytes: bytes, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        if len(module_bytes) > self.limits.max_module_bytes:
            raise LoadError(
                "too_large",
                f"module is {len(module_bytes)} bytes; the limit is {self.limits.max_module_bytes} bytes",
            )
        if module_bytes[:4] != b"\0asm":
            raise LoadError("magic", "not a WebAssembly module")
        self.sha256 = hashlib.sha256(module_bytes).hexdigest()
        self.size = len(module_bytes)
        config = wasmtime.Config()
        config.consume_fuel = True
        self._engine = wasmtime.Engine(config)
        try:
            self._module = wasmtime.Module(self._engine, module_bytes)
        except wasmtime.WasmtimeError as e:
            raise LoadError("invalid", str(e)) from None
        if self._module.imports:
            imp = self._module.imports[0]
            raise LoadError("imports", f"{imp.module}::{imp.name}")
        names = {e.name for e in self._module.exports}
        for name in REQUIRED_EXPORTS:
            if name not in names:
                raise LoadError("exports", f"`{name}` is not exported")
        self._lock = threading.Lock()
        self._instance: _Instance | None = None
        inst = self._ready()
        version = self._call(inst, "ff_abi_version", (), self.limits.fuel_per_load)
        if version != ABI_VERSION:
            raise LoadError("abi_version", f"module implements ABI {version}; this host {ABI_VERSION}")
        reply = msgpack.unpackb(self._read(inst, "ff_manifest", (), self.limits.fuel_per_load), raw=False)
        if "ok" not in reply:
            raise LoadError("unusable_rules", str(reply.get("error")))
        self.manifest = reply["ok"]
        self._instance = inst
        self.ruleset: str = self.manifest["ruleset"]
        self.targeting_key: str = self.manifest.get("targeting_key", TARGETING_KEY)
        self.flags: dict[str, dict] = {f["key"]: f for f in self.manifest["flags"]}
        self._reads = self._answer_reads()
        self._reads_all = sorted({r for f in self.manifest["flags"] for r in f.get("reads", [])})

    # --- instances -------------------------------------------------------------------------

    def _ready(self) -> _Instance:
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=self.limits.memory_bytes)
        store.set_fuel(self.limits.fuel_per_load)
        try:
            instance = wasmtime.Instance(store, self._module, [])
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            raise LoadError("instantiate", str(e)) from None
        exports = instance.exports(store)
        return _Instance(store=store, memory=exports["memory"], exports={n: exports[n] for n in REQUIRED_EXPORTS})

    def _call(self, inst: _Instance, name: str, args: tuple, fuel: int) -> Any:
        inst.store.set_fuel(fuel)
        try:
            return inst.exports[name](inst.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            raise _Trapped(f"{name}: {e}") from None

    def _read(self, inst: _Instance, name: str, args: tuple, fuel: int) -> bytes:
        packed = self._call(inst, name, args, fuel) & 0xFFFFFFFFFFFFFFFF
        ptr, length = packed >> 32, packed & 0xFFFFFFFF
        size = inst.memory.data_len(inst.store)
        if ptr + length > size:
            raise _Trapped(f"{name} returned a buffer outside memory")
        out = inst.memory.read(inst.store, ptr, ptr + length)
        self._call(inst, "ff_free", (ptr, length), self.limits.fuel_per_call)
        return bytes(out)

    def _write(self, inst: _Instance, data: bytes) -> int:
        if not data:
            return 0
        ptr = self._call(inst, "ff_alloc", (len(data),), self.limits.fuel_per_call)
        if ptr == 0:
            raise _Trapped("ff_alloc: out of memory")
        inst.memory.write(inst.store, data, ptr)
        return ptr

    def _run(self, export: str, inputs: list[bytes], options: int) -> bytes:
        """One ABI call with its inputs; the instance is discarded on any trap or limit.

        The inputs share one buffer (one ``ff_alloc`` and one ``ff_free``): every export call
        through wasmtime-py costs tens of microseconds, so an evaluation makes four.
        """
        with self._lock:
            inst = self._instance or self._ready()
            self._instance = None
            data = b"".join(inputs)
            ptr = self._write(inst, data)
            args: list[int] = []
            at = ptr
            for d in inputs:
                args += [at if d else 0, len(d)]
                at += len(d)
            out = self._read(inst, export, (*args, options), self.limits.fuel_per_call)
            if ptr:
                self._call(inst, "ff_free", (ptr, len(data)), self.limits.fuel_per_call)
            self._instance = inst
            return out

    # --- reads -----------------------------------------------------------------------------

    def _answer_reads(self) -> dict[str, list[str]]:
        out = {}
        for key in self.flags:
            names: set[str] = set()
            seen: set[str] = set()
            stack = [key]
            while stack:
                k = stack.pop()
                if k in seen:
                    continue
                seen.add(k)
                info = self.flags.get(k)
                if info:
                    names.update(info.get("reads", []))
                    stack.extend(info.get("prerequisites", []))
            out[key] = sorted(names)
        return out

    @staticmethod
    def _pick(context: Mapping[str, Any], names: list[str]) -> dict:
        return {n: context[n] for n in names if n in context}

    # --- evaluation ------------------------------------------------------------------------

    def fallback(self, key: str, code: str, message: str) -> Resolution:
        """The answer when the module gave none: the flag's ``on_error`` variant."""
        info = self.flags.get(key)
        if info is None:
            return Resolution(key, None, "ERROR", None, "FLAG_NOT_FOUND", f"flag `{key}` is not defined in ruleset `{self.ruleset}`")
        values = {v["name"]: v["value"] for v in info["variants"]}
        return Resolution(key, values.get(info["on_error"]), "ERROR", info["on_error"], code, message)

    def evaluate_bytes(self, key: str, context: bytes, explain: bool = False) -> bytes:
        """Raw result bytes for encoded context bytes (what the golden files record)."""
        options = OPT_EXPLAIN if explain else 0
        try:
            return self._run("ff_evaluate", [key.encode("utf-8"), context], options)
        except _Trapped as e:
            return msgpack.packb(self._resolution_map(self.fallback(key, "GENERAL", str(e))), use_bin_type=True)

    def evaluate_all_bytes(self, context: bytes, explain: bool = False) -> bytes:
        options = OPT_EXPLAIN if explain else 0
        try:
            return self._run("ff_evaluate_all", [context], options)
        except _Trapped as e:
            return msgpack.packb(
                [self._resolution_map(self.fallback(k, "GENERAL", str(e))) for k in self.flags],
                use_bin_type=True,
            )

    def evaluate(self, key: str, context: Mapping[str, Any], explain: bool = False) -> Resolution:
        """Evaluates one flag; never raises for bad input (errors are results)."""
        if key not in self.flags:
            return self.fallback(key, "FLAG_NOT_FOUND", "")
        try:
            encoded = encode_context(self._pick(context, self._reads[key]))
        except ContextError as e:
            return self.fallback(key, "PARSE_ERROR", f"context: {e}")
        if len(encoded) > self.limits.max_context_bytes:
            return self.fallback(key, "INVALID_CONTEXT", f"context is {len(encoded)} bytes; the limit is {self.limits.max_context_bytes}")
        return self._typed(self._decode(self.evaluate_bytes(key, encoded, explain)))

    def evaluate_all(self, context: Mapping[str, Any]) -> list[Resolution]:
        """Every flag, in declaration order."""
        try:
            encoded = encode_context(self._pick(context, self._reads_all))
        except ContextError as e:
            return [self.fallback(k, "PARSE_ERROR", f"context: {e}") for k in self.flags]
        if len(encoded) > self.limits.max_context_bytes:
            return [self.evaluate(k, context) for k in self.flags]
        raw = msgpack.unpackb(self.evaluate_all_bytes(encoded), raw=False)
        return [self._typed(self._from_map(r)) for r in raw]

    def _typed(self, r: Resolution) -> Resolution:
        # A float-typed flag's integral value is a float (50.0), as in every host's JSON.
        info = self.flags.get(r.key)
        if info and info.get("float") and isinstance(r.value, int) and not isinstance(r.value, bool):
            r.value = float(r.value)
        return r

    def _decode(self, raw: bytes) -> Resolution:
        return self._from_map(msgpack.unpackb(raw, raw=False))

    @staticmethod
    def _from_map(m: dict) -> Resolution:
        return Resolution(
            key=m["key"],
            value=m.get("value"),
            reason=m["reason"],
            variant=m.get("variant"),
            error_code=m.get("error_code"),
            error_message=m.get("error_message"),
            explain=m.get("explain"),
        )

    @staticmethod
    def _resolution_map(r: Resolution) -> dict:
        out: dict[str, Any] = {"key": r.key, "value": r.value}
        if r.variant is not None:
            out["variant"] = r.variant
        out["reason"] = r.reason
        if r.error_code is not None:
            out["error_code"] = r.error_code
        if r.error_message is not None:
            out["error_message"] = r.error_message
        return out
