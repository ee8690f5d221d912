// The MessagePack flagforge's JavaScript runtime reads and writes (ABI.md "Context", "Results"):
// the canonical encoding of context values, the positional context, the result encoding, and a
// bounded decoder for what a module reports (manifest, explanations). The Rust hosts do the same
// in flagforge-protocol; the shared corpora (corpus/golden, corpus/host) hold both to the same
// bytes. Hand-written: a general MessagePack library encodes JavaScript numbers by their own
// rules (1.0, -0, BigInt, key order), not the canonical ones, and costs more than this file.

const MAX_DEPTH = 32;
const MAX_SAFE = 2 ** 53;
const utf8 = new TextEncoder();
const strict = new TextDecoder("utf-8", { fatal: true });

/** A value the canonical encoding refuses; `message` names the path that holds it. */
export class ContextError extends Error {}

/** Malformed bytes; `message` is the canonical reader's wording (crates/protocol/src/wire.rs). */
export class WireError extends Error {}

/** Rust's `Display` of an `f64` that is not finite, so messages match the Rust hosts. */
const nonFinite = (n) => (Number.isNaN(n) ? "NaN" : n > 0 ? "inf" : "-inf");

/** A growable byte buffer, reused between calls. */
export class Writer {
  constructor(size = 1024) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.at = 0;
  }

  room(n) {
    if (this.at + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.at + n) size *= 2;
    const buf = new Uint8Array(size);
    buf.set(this.buf.subarray(0, this.at));
    this.buf = buf;
    this.view = new DataView(buf.buffer);
  }

  bytes() {
    return this.buf.subarray(0, this.at);
  }

  raw(bytes) {
    this.room(bytes.length);
    this.buf.set(bytes, this.at);
    this.at += bytes.length;
  }

  /** A length header: `fix` (fixstr/fixarray/fixmap base, with its limit) or the 8/16/32 forms. */
  head(n, fix, fixMax, m8, m16, m32) {
    this.room(5);
    const b = this.buf;
    if (n <= fixMax) b[this.at++] = fix | n;
    else if (m8 && n < 0x100) (b[this.at++] = m8), (b[this.at++] = n);
    else if (n < 0x10000) (b[this.at++] = m16), this.view.setUint16(this.at, n), (this.at += 2);
    else (b[this.at++] = m32), this.view.setUint32(this.at, n), (this.at += 4);
  }

  mapHead(n) { this.head(n, 0x80, 15, 0, 0xde, 0xdf); }
  arrayHead(n) { this.head(n, 0x90, 15, 0, 0xdc, 0xdd); }

  /** An integral number within ±2^53, in MessagePack's shortest form (as rmp's write_sint). */
  int(n) {
    this.room(9);
    const b = this.buf, v = this.view;
    if (n >= 0) {
      if (n < 0x80) b[this.at++] = n;
      else if (n < 0x100) (b[this.at++] = 0xcc), (b[this.at++] = n);
      else if (n < 0x10000) (b[this.at++] = 0xcd), v.setUint16(this.at, n), (this.at += 2);
      else if (n < 0x100000000) (b[this.at++] = 0xce), v.setUint32(this.at, n), (this.at += 4);
      else (b[this.at++] = 0xcf), v.setBigUint64(this.at, BigInt(n)), (this.at += 8);
    } else if (n >= -32) b[this.at++] = n & 0xff;
    else if (n >= -0x80) (b[this.at++] = 0xd0), v.setInt8(this.at++, n);
    else if (n >= -0x8000) (b[this.at++] = 0xd1), v.setInt16(this.at, n), (this.at += 2);
    else if (n >= -0x80000000) (b[this.at++] = 0xd2), v.setInt32(this.at, n), (this.at += 4);
    else (b[this.at++] = 0xd3), v.setBigInt64(this.at, BigInt(n)), (this.at += 8);
  }

  /** A finite number: an integer when integral within ±2^53, else a 64-bit float. */
  number(n) {
    if (Number.isInteger(n) && Math.abs(n) <= MAX_SAFE) return this.int(n);
    this.room(9);
    this.buf[this.at++] = 0xcb;
    this.view.setFloat64(this.at, n);
    this.at += 8;
  }

  /** A BigInt known to fit i64. */
  bigint(n) {
    if (n >= -MAX_SAFE_BIG && n <= MAX_SAFE_BIG) return this.int(Number(n));
    this.room(9);
    this.buf[this.at++] = n < 0n ? 0xd3 : 0xcf;
    if (n < 0n) this.view.setBigInt64(this.at, n);
    else this.view.setBigUint64(this.at, n);
    this.at += 8;
  }

  str(s) {
    const n = s.length;
    if (n < 64) {
      // Short ASCII (nearly every attribute value) without TextEncoder.
      this.room(n + 2);
      const b = this.buf;
      const start = this.at;
      b[this.at++] = n < 32 ? 0xa0 | n : 0xd9;
      if (n >= 32) b[this.at++] = n;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        b[this.at++] = c;
      }
      if (i === n) return;
      this.at = start;
    }
    this.strBytes(utf8.encode(s));
  }

  strBytes(bytes) {
    this.head(bytes.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
    this.raw(bytes);
  }

  nil() { this.room(1); this.buf[this.at++] = 0xc0; }
  bool(b) { this.room(1); this.buf[this.at++] = b ? 0xc3 : 0xc2; }

  /**
   * A JavaScript value in the canonical encoding, under the rules of a Rust host reading the
   * same value (bindings/src/context.rs before this runtime): `undefined` object members are
   * absent, `1.0` and `1` are one number, BigInt is an integer, a Date is its RFC 3339 string,
   * maps are written in UTF-8 key order. Refusals throw ContextError naming `path`.
   */
  value(v, path, depth) {
    switch (typeof v) {
      case "string": return this.str(v);
      case "number":
        if (!Number.isFinite(v)) throw new ContextError(`${path}: ${nonFinite(v)} is not a finite number`);
        return this.number(v);
      case "boolean": return this.bool(v);
      case "undefined": return this.nil();
      case "bigint":
        if (v < -I64 || v >= I64) throw new ContextError(`${path}: ${v} does not fit a 64-bit signed integer`);
        return this.bigint(v);
    }
    if (v === null) return this.nil();
    if (depth >= MAX_DEPTH) throw new ContextError(`${path}: nested deeper than ${MAX_DEPTH} levels`);
    if (Array.isArray(v)) {
      this.arrayHead(v.length);
      for (let i = 0; i < v.length; i++) this.value(v[i], `${path}[${i}]`, depth + 1);
      return;
    }
    if (typeof v !== "object") throw new ContextError(`${path}: functions and symbols cannot be context values`);
    if (v instanceof Date) return this.str(v.toISOString());
    this.object(v, path, depth);
  }

  /** An object's members, checked in their own order, written in UTF-8 key order. */
  object(o, path, depth) {
    const entries = [];
    for (const [k, item] of Object.entries(o)) {
      if (item === undefined) continue;
      const w = new Writer(64);
      w.value(item, `${path}.${k}`, depth + 1);
      entries.push([utf8.encode(k), w.bytes()]);
    }
    entries.sort((a, b) => compareBytes(a[0], b[0]));
    this.mapHead(entries.length);
    for (const [k, bytes] of entries) {
      this.strBytes(k);
      this.raw(bytes);
    }
  }
}

const I64 = 2n ** 63n;
const STR = 1, ARRAY = 2, MAP = 3;
const MAX_SAFE_BIG = 2n ** 53n;

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Sets a member without invoking `__proto__`'s setter. */
export function define(o, k, v) {
  if (k === "__proto__") Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

/**
 * The canonical reader (crates/protocol/src/wire.rs): string keys, no binary or extension
 * values, finite numbers, integers within i64, nesting at most MAX_DEPTH, nothing after the
 * value. Errors are WireError with the Rust reader's wording.
 */
export class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
    this.kind = 0;
  }

  take(n) {
    if (this.at + n > this.b.length) throw new WireError("unexpected end of input");
    const start = this.at;
    this.at += n;
    return start;
  }

  u8() { return this.b[this.take(1)]; }

  /** The length of a str, array or map marker `m`, its kind in `this.kind` (STR, ARRAY,
   * MAP); -1 for any other marker. */
  lenOf(m) {
    if (m >= 0x80 && m <= 0xbf) {
      this.kind = m >= 0xa0 ? STR : m >= 0x90 ? ARRAY : MAP;
      return m & (m >= 0xa0 ? 0x1f : 0x0f);
    }
    if (m < 0xd9 || m > 0xdf) return -1;
    this.kind = m <= 0xdb ? STR : m <= 0xdd ? ARRAY : MAP;
    switch (m) {
      case 0xd9: return this.u8();
      case 0xda: case 0xdc: case 0xde: return this.v.getUint16(this.take(2));
      default: return this.v.getUint32(this.take(4));
    }
  }

  mapLen() {
    const n = this.lenOf(this.u8());
    if (n < 0 || this.kind !== MAP) throw new WireError("context must be a map");
    return n;
  }

  /** A map key's bytes (a view into the input). */
  key() {
    const n = this.lenOf(this.u8());
    if (n < 0 || this.kind !== STR) throw new WireError("map keys must be strings");
    const start = this.take(n);
    return this.b.subarray(start, start + n);
  }

  finish() {
    if (this.at !== this.b.length) throw new WireError("trailing bytes after the value");
  }

  /** The bytes of one value at `depth`, checked as the module reads them. */
  raw(depth) {
    const start = this.at;
    this.skip(depth);
    return this.b.subarray(start, this.at);
  }

  skip(depth) {
    const start = this.at;
    const n = this.lenOf(this.u8());
    if (n < 0) {
      this.at = start;
      this.scalar();
      return;
    }
    if (this.kind === STR) return void this.take(n);
    const map = this.kind === MAP;
    const d = nested(depth);
    for (let i = 0; i < n; i++) {
      if (map) this.key();
      this.skip(d);
    }
  }

  /** A scalar (never a container): its value, decoded; a string as its bytes. */
  scalar() {
    const m = this.u8();
    const v = this.v;
    if (m <= 0x7f) return m;
    if (m >= 0xe0) return m - 0x100;
    switch (m) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xcc: return this.u8();
      case 0xcd: return v.getUint16(this.take(2));
      case 0xce: return v.getUint32(this.take(4));
      case 0xcf: {
        const big = v.getBigUint64(this.take(8));
        if (big >= I64) throw new WireError(`integer ${big} is out of range`);
        return intOf(big);
      }
      case 0xd0: return v.getInt8(this.take(1));
      case 0xd1: return v.getInt16(this.take(2));
      case 0xd2: return v.getInt32(this.take(4));
      case 0xd3: return intOf(v.getBigInt64(this.take(8)));
      case 0xca: return float(v.getFloat32(this.take(4)));
      case 0xcb: return float(v.getFloat64(this.take(8)));
      case 0xc4: case 0xc5: case 0xc6:
        throw new WireError("binary values are not accepted; use a string");
      case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: case 0xc7: case 0xc8: case 0xc9:
        throw new WireError("extension values are not accepted");
      case 0xc1: throw new WireError("invalid messagepack marker 0xc1");
    }
    const n = this.lenOf(m);
    if (n >= 0 && this.kind === STR) {
      const start = this.take(n);
      return this.b.subarray(start, start + n);
    }
    throw new WireError("invalid messagepack");
  }

  /** A whole value as JavaScript (maps as plain objects, big integers as BigInt). */
  full(depth) {
    const start = this.at;
    const n = this.lenOf(this.u8());
    if (n < 0 || this.kind === STR) {
      this.at = start;
      const s = this.scalar();
      return s instanceof Uint8Array ? utf8Text(s) : s;
    }
    const d = nested(depth);
    if (this.kind === ARRAY) {
      const out = [];
      for (let i = 0; i < n; i++) out.push(this.full(d));
      return out;
    }
    const out = {};
    for (let i = 0; i < n; i++) {
      const k = utf8Text(this.key());
      if (Object.hasOwn(out, k)) throw new WireError("duplicate map key");
      define(out, k, this.full(d));
    }
    return out;
  }
}

/** UTF-8 bytes as text; invalid UTF-8 is refused, as the Rust reader refuses it. */
export function utf8Text(bytes) {
  try {
    return strict.decode(bytes);
  } catch {
    throw new WireError("string is not valid UTF-8");
  }
}

function nested(depth) {
  if (depth + 1 > MAX_DEPTH) throw new WireError(`value nested deeper than ${MAX_DEPTH} levels`);
  return depth + 1;
}

function intOf(big) {
  return big >= -MAX_SAFE_BIG && big <= MAX_SAFE_BIG ? Number(big) : big;
}

function float(f) {
  if (!Number.isFinite(f)) throw new WireError("non-finite number");
  return f;
}

/** Decodes one whole value (a manifest, an explanation); `depth` is where it starts. */
export function decode(bytes, depth = 0) {
  const r = new Reader(bytes);
  const v = r.full(depth);
  r.finish();
  return v;
}
