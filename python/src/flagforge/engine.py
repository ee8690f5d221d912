"""The flagforge module ABI (ABI.md, version 2) on wasmtime: load, limit, marshal. No
evaluation here. This is Python's one host runtime: addressing flags by number, the positional
context, result records expanded from the manifest, remembered answers of flags that read
nothing, and the fallbacks, as ``flagforge-runtime`` does for the Rust hosts.

A module is validated (size, imports, exports, ABI version, manifest) before it serves; every
call runs with a fuel budget and a memory cap; a trap or a limit hit discards the instance and
answers the flag's ``on_error`` variant with reason ``ERROR`` (as ``wasm-host`` does).
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import msgpack
import wasmtime

ABI_VERSION = 2
REQUIRED_EXPORTS = (
    "memory",
    "ff_abi_version",
    "ff_input",
    "ff_evaluate",
    "ff_evaluate_all",
    "ff_manifest",
)
# Result records (ABI.md, "Result records"): codes are positions in these lists.
REASONS = ("STATIC", "DEFAULT", "TARGETING_MATCH", "SPLIT", "DISABLED", "CACHED", "STALE", "ERROR")
ERROR_CODES = (
    "PROVIDER_NOT_READY",
    "FLAG_NOT_FOUND",
    "PARSE_ERROR",
    "TYPE_MISMATCH",
    "TARGETING_KEY_MISSING",
    "INVALID_CONTEXT",
    "PROVIDER_FATAL",
    "GENERAL",
)
_RECORD = struct.Struct("<BBHII")
NO_VARIANT = 0xFFFF
EMPTY_CONTEXT = b"\x80"
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
    # The flag's static metadata (``metadata:`` in its rule file), on every answer for it.
    metadata: dict[str, Any] | None = None


@dataclass
class _Instance:
    store: wasmtime.Store
    memory: wasmtime.Memory
    exports: dict = field(default_factory=dict)
    # The input region as last reserved: (address, capacity).
    region: tuple[int, int] | None = None


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
            raise LoadError("bad_magic", "not a WebAssembly module")
        self.sha256 = hashlib.sha256(module_bytes).hexdigest()
        self.size = len(module_bytes)
        config = wasmtime.Config()
        config.consume_fuel = True
        self._engine = wasmtime.Engine(config)
        try:
            self._module = wasmtime.Module(self._engine, module_bytes)
        except wasmtime.WasmtimeError as e:
            raise LoadError("invalid_module", str(e)) from None
        if self._module.imports:
            imp = self._module.imports[0]
            raise LoadError("imports", f"{imp.module}::{imp.name}")
        names = {e.name for e in self._module.exports}
        if "ff_input" not in names and "ff_alloc" in names:
            raise LoadError("abi_version", f"module implements ABI 1; this host {ABI_VERSION}")
        for name in REQUIRED_EXPORTS:
            if name not in names:
                raise LoadError("missing_export", f"`{name}` is not exported")
        self._lock = threading.Lock()
        self._instance: _Instance | None = None
        inst = self._ready()
        try:
            version = self._call(inst, "ff_abi_version", (), self.limits.fuel_per_load)
        except _Trapped as e:
            raise LoadError("unusable", str(e)) from None
        if version != ABI_VERSION:
            raise LoadError("abi_version", f"module implements ABI {version}; this host {ABI_VERSION}")
        try:
            raw_manifest = self._read(inst, "ff_manifest", (), self.limits.fuel_per_load)
        except _Trapped as e:
            raise LoadError("unusable", str(e)) from None
        try:
            reply = msgpack.unpackb(raw_manifest, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise LoadError("bad_manifest", str(e)) from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise LoadError("no_rules", str(reply.get("error") if isinstance(reply, dict) else reply))
        self.manifest = reply["ok"]
        self._instance = inst
        self.ruleset: str = self.manifest["ruleset"]
        self.targeting_key: str = self.manifest.get("targeting_key", TARGETING_KEY)
        self._flag_list: list[dict] = self.manifest["flags"]
        self.flags: dict[str, dict] = {f["key"]: f for f in self._flag_list}
        self._index = {f["key"]: i for i, f in enumerate(self._flag_list)}
        self._names: list[str] = [a["name"] for a in self.manifest["context"]]
        slot_of = {n: i for i, n in enumerate(self._names)}
        self._alias = None if self.targeting_key == TARGETING_KEY else slot_of.get(self.targeting_key)
        reads = self._answer_reads()
        self._slots = {k: sorted({slot_of[n] for n in names if n in slot_of}) for k, names in reads.items()}
        self._slots_all = sorted({s for slots in self._slots.values() for s in slots})
        # The answers of flags that read nothing cannot change: ask once, remember.
        self._constant: dict[str, Resolution] = {}
        for key, slots in self._slots.items():
            if slots:
                continue
            try:
                i = self._index[key]
                r = self._run(i, EMPTY_CONTEXT, 0, lambda out, i=i: self._expand(i, out))
            except _Trapped:
                continue
            if r.reason != "ERROR":
                self._constant[key] = r

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
            raise _Trapped(f"{name} returned an answer outside memory")
        return bytes(inst.memory.read(inst.store, ptr, ptr + length))

    def _write(self, inst: _Instance, data: bytes) -> None:
        """The context into the instance's input region, reserved larger when it does not fit."""
        if inst.region is None or inst.region[1] < len(data):
            cap = 1 << max(10, (len(data) - 1).bit_length())
            ptr = self._call(inst, "ff_input", (cap,), self.limits.fuel_per_call)
            if ptr == 0:
                raise _Trapped("ff_input: out of memory")
            inst.region = (ptr, cap)
        if data:
            inst.memory.write(inst.store, data, inst.region[0])

    def _run(self, flag: int | None, context: bytes, options: int, read=None) -> Any:
        """One ABI call (flag ``None``: every flag), its answer given to ``read`` (the bytes
        themselves by default); the instance is discarded on any trap, limit or unreadable
        answer. Two export calls per evaluation: wasmtime-py's calls cost tens of microseconds."""
        if len(context) > self.limits.max_context_bytes:
            raise _Refused("INVALID_CONTEXT", f"context is {len(context)} bytes encoded; the limit is {self.limits.max_context_bytes} bytes")
        with self._lock:
            inst = self._instance or self._ready()
            self._instance = None
            self._write(inst, context)
            fuel = self.limits.fuel_per_call
            if flag is None:
                out = self._read(inst, "ff_evaluate_all", (len(context), options), fuel)
            else:
                out = self._read(inst, "ff_evaluate", (flag, len(context), options), fuel)
            result = read(out) if read else out
            self._instance = inst
            return result

    # --- reads and contexts ----------------------------------------------------------------

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

    def _positional(self, context: Mapping[str, Any], slots: list[int]) -> bytes:
        """The positional context (ABI.md, "Context"): slot numbers as keys, ascending, only
        non-null attributes; ``targetingKey`` fills the targeting attribute left unset."""
        if not isinstance(context, Mapping):
            raise ContextError("context must be a mapping")
        entries = {}
        for slot in slots:
            value = context.get(self._names[slot])
            if value is None and slot == self._alias:
                value = context.get(TARGETING_KEY)
            if value is not None:
                entries[slot] = _canonical(value, 1)
        return msgpack.packb(entries, use_bin_type=True)

    def _translate(self, canonical: bytes, slots: list[int]) -> bytes:
        if len(canonical) > self.limits.max_context_bytes:
            raise _Refused("INVALID_CONTEXT", f"context is {len(canonical)} bytes encoded; the limit is {self.limits.max_context_bytes} bytes")
        try:
            context = msgpack.unpackb(canonical, raw=False, strict_map_key=True, object_pairs_hook=_unique)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise _Refused("PARSE_ERROR", f"context: {e}") from None
        if not isinstance(context, dict):
            raise _Refused("PARSE_ERROR", "context: context must be a map")
        try:
            return self._positional(context, slots)
        except ContextError as e:
            raise _Refused("PARSE_ERROR", f"context: {e}") from None

    # --- results ---------------------------------------------------------------------------

    def _records(self, flag: int, data: bytes, at: int) -> tuple[Resolution, bytes, int]:
        """Reads one record at ``at``: the expanded result, its raw explanation, the next offset."""
        if len(data) - at < _RECORD.size:
            raise _Trapped("module returned a malformed result: truncated record")
        reason, code, variant, mlen, xlen = _RECORD.unpack_from(data, at)
        start = at + _RECORD.size
        end = start + mlen + xlen
        if end > len(data) or reason >= len(REASONS) or code > len(ERROR_CODES):
            raise _Trapped("module returned a malformed result: bad record")
        info = self._flag_list[flag]
        variants = info["variants"]
        if variant != NO_VARIANT and variant >= len(variants):
            raise _Trapped(f"module returned a malformed result: variant {variant}")
        served = variants[variant] if variant != NO_VARIANT else None
        try:
            message = data[start:start + mlen].decode("utf-8")
        except UnicodeDecodeError:
            raise _Trapped("module returned a malformed result: message is not UTF-8") from None
        explain_raw = data[start + mlen:end]
        try:
            explain = msgpack.unpackb(explain_raw, raw=False) if explain_raw else None
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise _Trapped(f"module returned a malformed result: explanation: {e}") from None
        r = Resolution(
            key=info["key"],
            value=served["value"] if served else None,
            reason=REASONS[reason],
            variant=served["name"] if served else None,
            error_code=ERROR_CODES[code - 1] if code else None,
            error_message=message if code else None,
            explain=explain,
            metadata=_metadata(info),
        )
        return r, explain_raw, end

    def _expand(self, flag: int, data: bytes) -> Resolution:
        r, _, end = self._records(flag, data, 0)
        if end != len(data):
            raise _Trapped("module returned a malformed result: bytes after the record")
        return r

    def _expand_all(self, data: bytes) -> list[Resolution]:
        out, at = [], 0
        for i in range(len(self._flag_list)):
            r, _, at = self._records(i, data, at)
            out.append(r)
        if at != len(data):
            raise _Trapped("module returned a malformed result: bytes after the last record")
        return out

    # --- evaluation ------------------------------------------------------------------------

    def fallback(self, key: str, code: str, message: str) -> Resolution:
        """The answer when the module gave none: the flag's ``on_error`` variant."""
        info = self.flags.get(key)
        if info is None:
            return Resolution(key, None, "ERROR", None, "FLAG_NOT_FOUND", f"flag `{key}` is not defined in ruleset `{self.ruleset}`")
        values = {v["name"]: v["value"] for v in info["variants"]}
        return Resolution(key, values.get(info["on_error"]), "ERROR", info["on_error"], code, message, metadata=_metadata(info))

    def _answer(self, key: str, context: Any, explain: bool, canonical: bool) -> Resolution:
        if key not in self.flags:
            return self.fallback(key, "FLAG_NOT_FOUND", "")
        if not explain and key in self._constant:
            c = self._constant[key]
            return Resolution(c.key, c.value, c.reason, c.variant, c.error_code, c.error_message, None, _metadata(self.flags[key]))
        flag = self._index[key]
        try:
            if canonical:
                positional = self._translate(context, self._slots[key])
            else:
                positional = self._positional(context, self._slots[key])
            return self._run(flag, positional, OPT_EXPLAIN if explain else 0, lambda out: self._expand(flag, out))
        except ContextError as e:
            return self.fallback(key, "INVALID_CONTEXT", f"cannot encode the context: {e}")
        except _Refused as e:
            return self.fallback(key, e.code, e.message)
        except _Trapped as e:
            return self.fallback(key, "GENERAL", str(e))

    def evaluate_bytes(self, key: str, context: bytes, explain: bool = False) -> bytes:
        """The result bytes (MessagePack, as every host encodes them: what the golden files
        record) for canonical context bytes."""
        return self._encode(self._answer(key, context, explain, canonical=True))

    def evaluate_all_bytes(self, context: bytes, explain: bool = False) -> bytes:
        try:
            positional = self._translate(context, self._slots_all)
            results = self._run(None, positional, OPT_EXPLAIN if explain else 0, self._expand_all)
        except _Refused as e:
            results = [self.fallback(k, e.code, e.message) for k in self.flags]
        except _Trapped as e:
            results = [self.fallback(k, "GENERAL", str(e)) for k in self.flags]
        return self._encode_list(results)

    def evaluate(self, key: str, context: Mapping[str, Any], explain: bool = False) -> Resolution:
        """Evaluates one flag; never raises for bad input (errors are results)."""
        return self._typed(self._answer(key, context, explain, canonical=False))

    def evaluate_all(self, context: Mapping[str, Any]) -> list[Resolution]:
        """Every flag, in declaration order, in one call."""
        try:
            positional = self._positional(context, self._slots_all)
            results = self._run(None, positional, 0, self._expand_all)
        except (ContextError, _Refused, _Trapped):
            # As the Rust hosts: each flag from the attributes it reads, so only the flags
            # that read the offending input fail.
            return [self.evaluate(k, context) for k in self.flags]
        return [self._typed(r) for r in results]

    def _typed(self, r: Resolution) -> Resolution:
        # A float-typed flag's integral value is a float (50.0), as in every host's JSON.
        info = self.flags.get(r.key)
        if info and info.get("float") and isinstance(r.value, int) and not isinstance(r.value, bool):
            r.value = float(r.value)
        return r

    @staticmethod
    def _encode(r: Resolution) -> bytes:
        """A result's MessagePack, field for field as the Rust hosts encode it."""
        fields: list[tuple[str, Any]] = [("key", r.key), ("value", r.value)]
        if r.variant is not None:
            fields.append(("variant", r.variant))
        fields.append(("reason", r.reason))
        if r.error_code is not None:
            fields.append(("error_code", r.error_code))
        if r.error_message is not None:
            fields.append(("error_message", r.error_message))
        if r.explain is not None:
            fields.append(("explain", r.explain))
        if r.metadata:
            # Keys in UTF-8 byte order, as every host writes maps.
            fields.append(("metadata", dict(sorted(r.metadata.items(), key=lambda kv: kv[0].encode("utf-8")))))
        return msgpack.packb(dict(fields), use_bin_type=True)

    def _encode_list(self, results: list[Resolution]) -> bytes:
        packer = msgpack.Packer(use_bin_type=True)
        return packer.pack_array_header(len(results)) + b"".join(self._encode(r) for r in results)


def _metadata(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """A flag's metadata from the manifest, copied (callers may change their answers)."""
    m = info.get("metadata")
    return dict(m) if m else None


def decode_result(raw: bytes) -> Resolution:
    """A result from its MessagePack (what ``FlagModule.evaluate_bytes`` returns)."""
    m = msgpack.unpackb(raw, raw=False)
    return Resolution(
        key=m["key"],
        value=m.get("value"),
        reason=m["reason"],
        variant=m.get("variant"),
        error_code=m.get("error_code"),
        error_message=m.get("error_message"),
        explain=m.get("explain"),
        metadata=m.get("metadata"),
    )


def _unique(pairs: list) -> dict:
    """A map from decoded pairs, refusing a key given twice (as the canonical reader does)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate map key")
    return out


class _Refused(Exception):
    """Input refused before any call, with the code and message of the fallback served."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
