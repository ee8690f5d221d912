// FlagEngine: runs a published flagforge module's own bytes with the JavaScript engine's
// WebAssembly (ABI.md, version 2). This is the host runtime for JavaScript — what
// crates/runtime is for the Rust hosts and python/src/flagforge/engine.py for Python: module
// validation, the input region, the positional context of only the attributes a flag can read,
// answers that need no call, result records expanded from the manifest, fallbacks, and the
// load and call vocabulary. The corpora (corpus/golden, corpus/host) hold every host to the
// same bytes and codes. Bad input never throws: it becomes a result with reason ERROR (the
// flag's `on_error` variant).
//
// A browser cannot give a fuel budget or a memory cap: a module is trusted to terminate, so
// load modules only from a flagforge host, which verifies signatures.

import { ContextError, Reader, WireError, Writer, decode, define, utf8Text } from "./msgpack.js";
import { sha256 } from "./sha256.js";

const ABI_VERSION = 2;
const MAX_MODULE_BYTES = 8 * 1024 * 1024;
const MAX_CONTEXT_BYTES = 1024 * 1024;
const TARGETING_KEY = "targetingKey";
const OPT_EXPLAIN = 1;
const NO_VARIANT = 0xffff;
const EMPTY_CONTEXT = Uint8Array.of(0x80);
const REASONS = ["STATIC", "DEFAULT", "TARGETING_MATCH", "SPLIT", "DISABLED", "CACHED", "STALE", "ERROR"];
const ERRORS = [null, "PROVIDER_NOT_READY", "FLAG_NOT_FOUND", "PARSE_ERROR", "TYPE_MISMATCH",
  "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "PROVIDER_FATAL", "GENERAL"];

/** A module refused at load; `code` is ABI.md's host vocabulary, the same on every host. */
function loadError(code, message) {
  const e = new Error(message);
  e.name = "FlagEngineLoadError";
  e.code = code;
  return e;
}

/** Why a call produced no answer; `code` is the error code of the fallback served, `discards`
 * says the instance must not be called again (crates/runtime's CallError). */
class CallError extends Error {
  constructor(code, message, discards = false) {
    super(message);
    this.code = code;
    this.discards = discards;
  }
}
const trapped = (e) => new CallError("GENERAL", `module trapped: ${e?.message ?? e}`, true);
const malformed = (why) => new CallError("GENERAL", `module returned a malformed result: ${why}`, true);
const unencodable = (why) => new CallError("INVALID_CONTEXT", `cannot encode the context: ${why}`);
const tooLarge = (size) =>
  new CallError("INVALID_CONTEXT", `context is ${size} bytes encoded; the limit is ${MAX_CONTEXT_BYTES} bytes`);

const text = (e) => e?.message ?? String(e);

/** An instance of the module and its exports, resolved and checked once. */
class Instance {
  static async create(module) {
    let instance;
    try {
      instance = await WebAssembly.instantiate(module, {});
    } catch (e) {
      throw loadError("instantiate", text(e));
    }
    const x = instance.exports;
    const fn = (name) => {
      if (x[name] === undefined) throw loadError("missing_export", `the module does not export \`${name}\``);
      if (typeof x[name] !== "function") throw loadError("missing_export", `the module's \`${name}\` is not a function`);
      return x[name];
    };
    if (x.memory === undefined) throw loadError("missing_export", "the module does not export `memory`");
    if (!(x.memory instanceof WebAssembly.Memory)) throw loadError("missing_export", "`memory` is not a memory");
    let version;
    try {
      version = fn("ff_abi_version")() >>> 0;
    } catch (e) {
      throw e.code ? e : loadError("unusable", `ff_abi_version: ${text(e)}`);
    }
    if (version !== ABI_VERSION) {
      throw loadError("abi_version", `the module speaks ABI version ${version}; this package speaks ${ABI_VERSION}`);
    }
    return new Instance(x.memory, fn("ff_input"), fn("ff_evaluate"), fn("ff_evaluate_all"), fn);
  }

  constructor(memory, input, evaluate, evaluateAll, fn) {
    this.memory = memory;
    this.input = input;
    this.evaluate = evaluate;
    this.evaluateAll = evaluateAll;
    this.fn = fn;
    this.bytes = new Uint8Array(memory.buffer);
    this.ptr = 0;
    this.cap = 0;
  }

  /** The memory as bytes, at least `need` long when memory is: growing memory detaches the
   * previous buffer, so a view shorter than needed is renewed before trusting its length. */
  mem(need = 0) {
    if (this.bytes.byteLength < need || this.bytes.byteLength === 0) {
      this.bytes = new Uint8Array(this.memory.buffer);
    }
    return this.bytes;
  }

  /** Copies the positional context into the input region, reserving a larger region (the
   * next power of two, at least 1 KiB) when it does not fit. */
  write(context) {
    const len = context.length;
    if (len > this.cap) {
      let cap = 1024;
      while (cap < len) cap *= 2;
      const ptr = this.input(cap) >>> 0;
      if (ptr === 0) throw new CallError("GENERAL", "module is out of memory", true);
      this.ptr = ptr;
      this.cap = cap;
    }
    const mem = this.mem(this.ptr + len);
    if (this.ptr + len > mem.length) throw malformed("input region lies outside memory");
    mem.set(context, this.ptr);
    return len;
  }

  /** Runs `ff_evaluate` (flag a number) or `ff_evaluate_all` (flag null); the answer's
   * location, checked against memory. */
  call(flag, context, options) {
    let ptr, len;
    try {
      const n = this.write(context);
      // Each i64 answer is unpacked where it is returned: Node 20's optimising compiler
      // crashes the process on a merge (phi) of two wasm i64 results (V8
      // RepresentationChangerError, Phi of SignedBigInt64); see node.test.js.
      if (flag === null) {
        const packed = this.evaluateAll(n, options);
        ptr = high(packed);
        len = low(packed);
      } else {
        const packed = this.evaluate(flag, n, options);
        ptr = high(packed);
        len = low(packed);
      }
    } catch (e) {
      throw e instanceof CallError ? e : trapped(e);
    }
    if (ptr + len > this.mem(ptr + len).length) throw malformed(`answer ${ptr}+${len} lies outside memory`);
    return [ptr, len];
  }

  /** The manifest the module reports (ABI.md, "Manifest"), checked. */
  manifest() {
    let packed;
    try {
      packed = this.fn("ff_manifest")();
    } catch (e) {
      throw e.code ? e : loadError("unusable", `ff_manifest: ${text(e)}`);
    }
    if (typeof packed !== "bigint") throw loadError("bad_manifest", "ff_manifest returned no location");
    const ptr = high(packed);
    const len = low(packed);
    const mem = this.mem(ptr + len);
    if (ptr + len > mem.length) throw loadError("bad_manifest", "manifest location outside memory");
    let reply;
    try {
      // The manifest's own structure sits 6 levels above its variant values.
      reply = checkReply(decode(mem.slice(ptr, ptr + len), -8));
    } catch (e) {
      throw loadError("bad_manifest", `unreadable manifest: ${text(e)}`);
    }
    if ("error" in reply) throw loadError("no_rules", `the module cannot serve: ${reply.error}`);
    return reply.ok;
  }
}

/** The pointer (high 32 bits) and length (low 32 bits) of a packed i64 location (ABI.md). */
const high = (packed) => Number(packed >> 32n) >>> 0;
const low = (packed) => Number(packed & 0xffffffffn);

/** What a typed decoder of the manifest (protocol's `ManifestReply`) requires. */
function checkReply(reply) {
  const need = (ok, what) => {
    if (!ok) throw new Error(what);
  };
  const isStr = (v) => typeof v === "string";
  const strings = (v, what) => need(v === undefined || (Array.isArray(v) && v.every(isStr)), `${what}: a list of strings`);
  need(reply && typeof reply === "object" && !Array.isArray(reply), "not a map");
  const keys = Object.keys(reply);
  need(keys.length === 1 && (keys[0] === "ok" || keys[0] === "error"), "neither `ok` nor `error`");
  if ("error" in reply) return (need(isStr(reply.error), "`error`: a string"), reply);
  const m = reply.ok;
  need(m && typeof m === "object", "`ok`: a map");
  need(isStr(m.ruleset) && isStr(m.compiler) && typeof m.abi_version === "number", "ruleset, compiler, abi_version");
  m.targeting_key ??= TARGETING_KEY;
  need(isStr(m.targeting_key), "`targeting_key`: a string");
  need(Array.isArray(m.context) && m.context.every((a) => isStr(a?.name) && isStr(a?.type)), "`context`: attributes");
  need(Array.isArray(m.flags), "`flags`: a list");
  for (const f of m.flags) {
    need(f && isStr(f.key) && isStr(f.owner) && isStr(f.default) && isStr(f.on_error), "a flag's key, owner, default, on_error");
    need(Array.isArray(f.variants) && f.variants.every((v) => isStr(v?.name) && "value" in v), `${f.key}: variants`);
    need(typeof f.static === "boolean" && isStr(f.kind) && isStr(f.propagation), `${f.key}: static, kind, propagation`);
    strings(f.reads, `${f.key}.reads`);
    strings(f.prerequisites, `${f.key}.prerequisites`);
  }
  return reply;
}

/** Each flag's slots (protocol's `Layout`): the attributes its answer can read, through its
 * prerequisites, in slot order; `null` slot list means "every flag". */
function layout(manifest) {
  const slotOf = new Map(manifest.context.map((a, i) => [a.name, i]));
  const alias = manifest.targeting_key === TARGETING_KEY ? null : slotOf.get(manifest.targeting_key) ?? null;
  const byKey = new Map(manifest.flags.map((f) => [f.key, f]));
  const plan = (slots) => {
    const sorted = [...new Set(slots)].sort((a, b) => a - b);
    const wanted = new Uint8Array(manifest.context.length);
    for (const s of sorted) wanted[s] = 1;
    return {
      slots: sorted,
      wanted,
      names: sorted.map((s) => manifest.context[s].name),
      paths: sorted.map((s) => `context.${manifest.context[s].name}`),
      alias: alias !== null && sorted.includes(alias) ? alias : null,
    };
  };
  const all = [];
  const flags = manifest.flags.map((f, index) => {
    const names = new Set();
    const seen = new Set();
    const stack = [f.key];
    while (stack.length) {
      const k = stack.pop();
      if (seen.has(k)) continue;
      seen.add(k);
      const info = byKey.get(k);
      if (!info) continue;
      for (const n of info.reads ?? []) names.add(n);
      stack.push(...(info.prerequisites ?? []));
    }
    const slots = [...names].map((n) => slotOf.get(n)).filter((s) => s !== undefined);
    all.push(...slots);
    // Each variant's value in the canonical encoding, written into result bytes as is.
    const values = new Map(f.variants.map((v) => {
      const w = new Writer(16);
      w.value(v.value, "value", 0);
      return [v.name, w.bytes().slice()];
    }));
    return { index, info: f, plan: plan(slots), values, constant: null };
  });
  // Declared names (and `targetingKey` when it stands in) by a hash of their UTF-8 bytes, so
  // canonical context keys are matched without making strings of them.
  const byHash = new Map();
  const index = (name, id) => {
    const bytes = new TextEncoder().encode(name);
    const h = fnv(bytes);
    byHash.set(h, [...(byHash.get(h) ?? []), [bytes, id, name]]);
  };
  manifest.context.forEach((a, i) => index(a.name, i));
  if (alias !== null && !slotOf.has(TARGETING_KEY)) index(TARGETING_KEY, -1);
  return { flags, all: plan(all), byHash, alias };
}

/** FNV-1a over bytes (a lookup hash, not a digest). */
function fnv(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

/** The [bytes, id, name] entry of a declared key, or undefined. */
function lookupKey(byHash, key) {
  const candidates = byHash.get(fnv(key));
  if (candidates === undefined) return undefined;
  for (const c of candidates) {
    const bytes = c[0];
    if (bytes.length !== key.length) continue;
    let i = 0;
    while (i < key.length && bytes[i] === key[i]) i++;
    if (i === key.length) return c;
  }
  return undefined;
}

/** A copy of a flag value, so a caller changing one answer cannot change the next. */
function copy(v) {
  if (v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map(copy);
  const o = {};
  for (const k of Object.keys(v)) define(o, k, copy(v[k]));
  return o;
}

function answerCopy(r) {
  const out = typeof r.value === "object" && r.value !== null ? { ...r, value: copy(r.value) } : { ...r };
  if (r.metadata !== undefined) out.metadata = { ...r.metadata };
  return out;
}

/** A loaded flagforge module, ready to evaluate. */
export class FlagEngine {
  #module;
  #instance;
  #manifest;
  #layout;
  #byKey;
  #hash;
  #size;
  #w = new Writer(1024);

  constructor(secret, module, instance, manifest, hash, size) {
    if (secret !== LOAD) throw new TypeError("use FlagEngine.load(bytes)");
    this.#module = module;
    this.#instance = instance;
    this.#manifest = manifest;
    this.#layout = layout(manifest);
    this.#byKey = new Map(this.#layout.flags.map((f) => [f.info.key, f]));
    this.#hash = hash;
    this.#size = size;
  }

  /**
   * Validates, compiles and instantiates module bytes (what `flagforge build` wrote, or a host
   * daemon's `GET /v1/modules/{ruleset}`). Rejects with an Error whose `code` is one of
   * `too_large`, `bad_magic`, `invalid_module`, `imports`, `missing_export`, `abi_version`,
   * `instantiate`, `unusable`, `no_rules`, `bad_manifest`.
   */
  static async load(bytes) {
    const data = bytes instanceof Uint8Array ? bytes
      : ArrayBuffer.isView(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      : new Uint8Array(bytes);
    if (data.length > MAX_MODULE_BYTES) {
      throw loadError("too_large", `module is ${data.length} bytes; the limit is ${MAX_MODULE_BYTES} bytes`);
    }
    if (data.length < 4 || data[0] !== 0 || data[1] !== 0x61 || data[2] !== 0x73 || data[3] !== 0x6d) {
      throw loadError("bad_magic", "not a WebAssembly module (bad magic bytes)");
    }
    let module;
    try {
      module = await WebAssembly.compile(data);
    } catch (e) {
      throw loadError("invalid_module", `not a valid module: ${text(e)}`);
    }
    if (WebAssembly.Module.imports(module).length > 0) {
      throw loadError("imports", "the module imports functions; flagforge modules import nothing");
    }
    const instance = await Instance.create(module);
    instance.fn("ff_manifest");
    const manifest = instance.manifest();
    const engine = new FlagEngine(LOAD, module, instance, manifest, await sha256(data), data.length);
    engine.#rememberConstants();
    return engine;
  }

  /** The module's manifest: ruleset, context schema, flags with kind, owner, variants. */
  get manifest() { return this.#manifest; }
  /** sha256 of the module bytes (hex): the module's identity, as on every host. */
  get hash() { return this.#hash; }
  /** The ruleset name. */
  get ruleset() { return this.#manifest.ruleset; }
  /** Module size in bytes. */
  get size() { return this.#size; }

  /** Evaluates one flag. Never throws: problems become a result with reason `ERROR`. */
  evaluate(flagKey, context, explain = false) {
    const f = this.#byKey.get(flagKey);
    if (f === undefined) return this.#notFound(flagKey);
    // Refused before anything else, as the Rust hosts refuse it (also for flags reading nothing).
    if (!isContext(context)) return this.#fallback(f, unencodable("the context must be an object"));
    if (!explain && f.constant !== null) return answerCopy(f.constant);
    let input;
    try {
      input = this.#encode(f.plan, context);
    } catch (e) {
      return this.#fallback(f, e);
    }
    return this.#one(f, input, explain);
  }

  /** Evaluates every flag, in declaration order, in one call. */
  evaluateAll(context, explain = false) {
    try {
      const input = this.#encode(this.#layout.all, context);
      return this.#all(input, explain);
    } catch {
      // Each flag from the attributes it reads, so only the flags that read the offending
      // input fail (as wasm-host).
      return this.#layout.flags.map((f) => this.evaluate(f.info.key, context, explain));
    }
  }

  /** The canonical MessagePack bytes of a context: exactly what a Rust host encodes for the
   * same logical context. Throws a TypeError for an unusable context. */
  static encodeContext(context) {
    const w = new Writer(256);
    try {
      if (context === null || context === undefined) w.mapHead(0);
      else {
        w.value(context, "context", 0);
        // Only a map is a context (the first byte: fixmap, map16, map32).
        const m = w.buf[0];
        if (!((m >= 0x80 && m <= 0x8f) || m === 0xde || m === 0xdf)) {
          throw new ContextError(`the context must be an object, not a ${typeName(m)}`);
        }
      }
    } catch (e) {
      throw new TypeError(e.message);
    }
    return w.bytes().slice();
  }

  /** The result bytes (MessagePack, ABI.md "Results") for one flag and canonical context
   * bytes: the byte-level contract every host is tested on. Bytes that do not decode answer
   * `PARSE_ERROR`. */
  evaluateBytes(flagKey, context, explain = false) {
    const f = this.#byKey.get(flagKey);
    let r;
    if (f === undefined) r = this.#notFound(flagKey);
    else if (!explain && f.constant !== null) r = f.constant;
    else {
      try {
        r = this.#one(f, this.#translate(f.plan, context), explain);
      } catch (e) {
        r = this.#fallback(f, e);
      }
    }
    results.at = 0;
    writeResult(results, r, f);
    return results.bytes().slice();
  }

  /** The result bytes for every flag (a MessagePack list in declaration order). */
  evaluateAllBytes(context, explain = false) {
    let all;
    try {
      all = this.#all(this.#translate(this.#layout.all, context), explain);
    } catch (e) {
      all = this.#layout.flags.map((f) => this.#fallback(f, e));
    }
    results.at = 0;
    results.arrayHead(all.length);
    for (const f of this.#layout.flags) writeResult(results, all[f.index], f);
    return results.bytes().slice();
  }

  /** The positional context for `plan` from a context object: only the plan's members are
   * read and checked (as the Rust hosts pick them: slots in order, then `targetingKey`). */
  #encode(plan, ctx) {
    const w = this.#w;
    w.at = 5;
    if (ctx === null || ctx === undefined) ctx = EMPTY;
    else if (!isContext(ctx)) throw unencodable("the context must be an object");
    const { slots, names, paths, alias } = plan;
    let count = 0;
    let late = null;
    let tkChecked = alias === null;
    try {
      for (let i = 0; i < slots.length; i++) {
        let v = ctx[names[i]];
        if (slots[i] === alias && (v === undefined || v === null)) {
          tkChecked = true;
          v = ctx[TARGETING_KEY];
          if (v === undefined || v === null) continue;
          const at = w.at;
          w.int(slots[i]);
          try {
            w.value(v, `context.${TARGETING_KEY}`, 1);
          } catch (e) {
            // Read last by the Rust hosts: a later attribute's refusal comes first.
            late = e;
            w.at = at;
            continue;
          }
          count++;
          continue;
        }
        if (v === undefined || v === null) {
          // A present null is still checked by the Rust hosts (it is absent to the rules).
          continue;
        }
        w.int(slots[i]);
        w.value(v, paths[i], 1);
        count++;
      }
      if (late) throw late;
      if (!tkChecked) {
        // Not sent, but checked as the Rust hosts check every member they read.
        const tk = ctx[TARGETING_KEY];
        if (tk !== undefined && tk !== null && typeof tk !== "string") {
          scratch.at = 0;
          scratch.value(tk, `context.${TARGETING_KEY}`, 1);
        }
      }
    } catch (e) {
      throw e instanceof ContextError ? unencodable(e.message) : e;
    }
    return finishMap(w, count);
  }

  /** The positional context for `plan` from canonical context bytes, bounded before reading
   * (protocol's `positional::from_canonical`). */
  #translate(plan, bytes) {
    if (bytes.length > MAX_CONTEXT_BYTES) throw tooLarge(bytes.length);
    try {
      return fromCanonical(bytes, plan, this.#layout, this.#w);
    } catch (e) {
      throw e instanceof WireError ? new CallError("PARSE_ERROR", `context: ${e.message}`) : e;
    }
  }

  #one(f, input, explain) {
    try {
      const [ptr, len] = this.#call(f.index, input, explain);
      const mem = this.#instance.mem();
      const r = readRecord(mem, ptr, ptr + len, f.info);
      if (recordEnd !== ptr + len) throw malformed("bytes follow the last result record");
      return r;
    } catch (e) {
      return this.#fail(f, e);
    }
  }

  #all(input, explain) {
    let results;
    try {
      const [ptr, len] = this.#call(null, input, explain);
      const mem = this.#instance.mem();
      results = new Array(this.#layout.flags.length);
      recordEnd = ptr;
      for (const f of this.#layout.flags) results[f.index] = readRecord(mem, recordEnd, ptr + len, f.info);
      if (recordEnd !== ptr + len) throw malformed("bytes follow the last result record");
    } catch (e) {
      if (e instanceof CallError) this.#discard(e);
      throw e;
    }
    return results;
  }

  /** Calls the module; after a failure that discards the instance, a fresh one is made in the
   * background and calls answer `on_error` until it is ready (as the Rust hosts). */
  #call(flag, input, explain) {
    const inst = this.#instance;
    if (inst === null) {
      throw new CallError("GENERAL", "cannot create a module instance: the module is being re-instantiated");
    }
    if (input.length > MAX_CONTEXT_BYTES) throw tooLarge(input.length);
    return inst.call(flag, input, explain ? OPT_EXPLAIN : 0);
  }

  #discard(e) {
    if (!e.discards || this.#instance === null) return;
    this.#instance = null;
    Instance.create(this.#module).then((i) => (this.#instance = i), () => {});
  }

  #fail(f, e) {
    if (!(e instanceof CallError)) e = malformed(text(e));
    this.#discard(e);
    return this.#fallback(f, e);
  }

  /** The flag's `on_error` answer for a failure. */
  #fallback(f, e) {
    if (!(e instanceof CallError)) e = unencodable(text(e));
    const info = f.info;
    const served = info.variants.find((v) => v.name === info.on_error);
    const r = { key: info.key, value: copy(served?.value ?? null), variant: info.on_error, reason: "ERROR",
      errorCode: e.code, errorMessage: e.message };
    if (info.metadata !== undefined) r.metadata = { ...info.metadata };
    return r;
  }

  #notFound(key) {
    return { key, value: null, reason: "ERROR", errorCode: "FLAG_NOT_FOUND",
      errorMessage: `flag \`${key}\` is not defined in ruleset \`${this.#manifest.ruleset}\`` };
  }

  /** The answers of flags that read nothing cannot change: ask once, remember (not ERRORs). */
  #rememberConstants() {
    for (const f of this.#layout.flags) {
      if (f.plan.slots.length > 0) continue;
      const r = this.#one(f, EMPTY_CONTEXT, false);
      if (r.reason !== "ERROR") f.constant = r;
    }
  }
}

const LOAD = Symbol("load");

/** Whether `ctx` can be a context object (null and undefined are the empty context). */
const isContext = (ctx) => ctx === null || ctx === undefined || (typeof ctx === "object" && !Array.isArray(ctx));
/** The result bytes being written (one call at a time: JavaScript is single-threaded). */
const results = new Writer(1024);
/** Where values only checked, not sent, are written. */
const scratch = new Writer(64);

/** The canonical value type (protocol's `Value::type_name`) of the value starting with `m`. */
function typeName(m) {
  if ((m >= 0x90 && m <= 0x9f) || m === 0xdc || m === 0xdd) return "list";
  if (m === 0xc2 || m === 0xc3) return "bool";
  if (m === 0xcb) return "number";
  if ((m >= 0xa0 && m <= 0xbf) || m === 0xd9 || m === 0xda || m === 0xdb) return "string";
  if (m === 0xc0) return "null";
  return "int";
}
const EMPTY = Object.freeze({});
/** Where the last record read by readRecord ended. */
let recordEnd = 0;

/** Writes the map header for `count` entries written from offset 5; the finished bytes. */
function finishMap(w, count) {
  const b = w.buf;
  let start;
  if (count < 16) (start = 4), (b[4] = 0x80 | count);
  else if (count < 0x10000) (start = 2), (b[2] = 0xde), w.view.setUint16(3, count);
  else (start = 0), (b[0] = 0xdf), w.view.setUint32(1, count);
  return b.subarray(start, w.at);
}

/**
 * Reads the result record at `at` (ABI.md, "Result records") for flag `info`, expanded from
 * the manifest; sets `recordEnd` to where the record ends.
 */
function readRecord(mem, at, end, info) {
  if (at + 12 > end) throw malformed("result record is truncated");
  const reason = REASONS[mem[at]];
  if (reason === undefined) throw malformed(`result record has unknown code ${mem[at]}`);
  const code = mem[at + 1];
  const errorCode = ERRORS[code];
  if (errorCode === undefined) throw malformed(`result record has unknown code ${code}`);
  const variant = mem[at + 2] | (mem[at + 3] << 8);
  const msgLen = (mem[at + 4] | (mem[at + 5] << 8) | (mem[at + 6] << 16) | (mem[at + 7] << 24)) >>> 0;
  const xLen = (mem[at + 8] | (mem[at + 9] << 8) | (mem[at + 10] << 16) | (mem[at + 11] << 24)) >>> 0;
  const msgAt = at + 12;
  if (msgAt + msgLen + xLen > end) throw malformed("result record is truncated");
  const r = { key: info.key, value: null };
  if (variant !== NO_VARIANT) {
    const v = info.variants[variant];
    if (v === undefined) throw malformed(`result serves variant number ${variant}, which the flag does not have`);
    r.value = copy(v.value);
    r.variant = v.name;
  }
  r.reason = reason;
  if (errorCode !== null) {
    r.errorCode = errorCode;
    try {
      r.errorMessage = utf8Text(mem.subarray(msgAt, msgAt + msgLen));
    } catch {
      throw malformed("result record message is not UTF-8");
    }
  }
  if (xLen > 0) {
    try {
      r.explain = checkExplanation(decode(mem.slice(msgAt + msgLen, msgAt + msgLen + xLen)));
    } catch (e) {
      throw malformed(`result explanation does not decode: ${text(e)}`);
    }
  }
  // The flag's static metadata (strings, numbers, booleans): copied, as values are.
  if (info.metadata !== undefined) r.metadata = { ...info.metadata };
  recordEnd = msgAt + msgLen + xLen;
  return r;
}

/** An explanation as protocol's `Explanation` accepts it: `{ rule?, steps: [{ check,
 * source?, outcome }] }`. */
function checkExplanation(x) {
  const ok = x && typeof x === "object" && Array.isArray(x.steps)
    && (x.rule === undefined || (Number.isInteger(x.rule) && x.rule >= 0 && x.rule <= 0xffffffff))
    && x.steps.every((s) => s && typeof s.check === "string" && typeof s.outcome === "string"
      && (s.source === undefined || typeof s.source === "string"));
  if (!ok) throw new Error("not an explanation");
  const out = x.rule === undefined ? {} : { rule: x.rule };
  out.steps = x.steps.map((s) => (s.source === undefined
    ? { check: s.check, outcome: s.outcome } : { check: s.check, source: s.source, outcome: s.outcome }));
  return out;
}

/** A result in its MessagePack encoding (protocol's `Resolution`, fields in declaration order);
 * `f` is the flag's layout entry (undefined for an unknown flag). */
function writeResult(w, r, f) {
  const n = 3 + (r.variant !== undefined) + (r.errorCode !== undefined) + (r.errorMessage !== undefined)
    + (r.explain !== undefined) + (r.metadata !== undefined);
  w.mapHead(n);
  w.str("key");
  w.str(r.key);
  w.str("value");
  const value = r.variant === undefined ? undefined : f?.values.get(r.variant);
  if (value === undefined) w.value(r.value, "value", 0);
  else w.raw(value);
  if (r.variant !== undefined) w.str("variant"), w.str(r.variant);
  w.str("reason");
  w.str(r.reason);
  if (r.errorCode !== undefined) w.str("error_code"), w.str(r.errorCode);
  if (r.errorMessage !== undefined) w.str("error_message"), w.str(r.errorMessage);
  if (r.explain !== undefined) {
    w.str("explain");
    const x = r.explain;
    w.mapHead(x.rule === undefined ? 1 : 2);
    if (x.rule !== undefined) w.str("rule"), w.int(x.rule);
    w.str("steps");
    w.arrayHead(x.steps.length);
    for (const s of x.steps) {
      w.mapHead(s.source === undefined ? 2 : 3);
      w.str("check"), w.str(s.check);
      if (s.source !== undefined) w.str("source"), w.str(s.source);
      w.str("outcome"), w.str(s.outcome);
    }
  }
  // Keys in UTF-8 byte order, as the compiler stores them and every host writes maps.
  if (r.metadata !== undefined) w.str("metadata"), w.object(r.metadata, "metadata", 0);
}

/** protocol's `positional::from_canonical`: declared attributes the plan reads, in slot order,
 * their bytes copied as given; `targetingKey` fills the targeting slot when it is unset. */
function fromCanonical(bytes, plan, { byHash, alias }, w) {
  const r = new Reader(bytes);
  const n = r.mapLen();
  const entries = [];
  const wanted = plan.wanted;
  const seen = new Uint8Array(wanted.length + 1);
  let targeting = null;
  for (let i = 0; i < n; i++) {
    const declared = lookupKey(byHash, r.key());
    if (declared === undefined) {
      r.skip(1);
      continue;
    }
    const slot = declared[1];
    const isTk = slot === -1;
    const at = isTk ? wanted.length : slot;
    if (seen[at]) throw new WireError(`duplicate key \`${declared[2]}\``);
    seen[at] = 1;
    if (isTk) {
      const raw = r.raw(1);
      targeting = raw.length === 1 && raw[0] === 0xc0 ? null : raw;
    } else if (wanted[slot]) {
      const raw = r.raw(1);
      if (!(raw.length === 1 && raw[0] === 0xc0)) entries.push([slot, raw]);
    } else r.skip(1);
  }
  r.finish();
  if (targeting !== null && wanted[alias] && !entries.some(([s]) => s === alias)) entries.push([alias, targeting]);
  entries.sort((a, b) => a[0] - b[0]);
  w.at = 5;
  for (const [slot, raw] of entries) {
    w.int(slot);
    w.raw(raw);
  }
  return finishMap(w, entries.length);
}
