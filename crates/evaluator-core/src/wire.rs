//! Zero-copy reading of a canonical MessagePack context straight into schema slots.
//!
//! Hand-written over `rmp::Marker` rather than decoding through serde: the module reads only
//! the declared attributes, borrows their strings from the input, and skips everything else
//! without building values — decoding a whole `Context` first cost more than evaluating the
//! rules. The accepted input is exactly what [`flagforge_protocol::value`] accepts: string
//! keys, no binary or extension values, finite numbers, integers within `i64`, nesting at most
//! [`MAX_DEPTH`] deep, no duplicate declared keys, nothing after the map.

use flagforge_protocol::limits::MAX_DEPTH;
use flagforge_protocol::value::MAX_SAFE_INTEGER;
use rmp::Marker;

use crate::bind::{convert, wanted, Needs, Scalar, Slot, Slots};
use crate::ir::AttrIr;

/// Why context bytes were refused.
#[derive(Debug)]
pub(crate) struct WireError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(msg.into()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => err("unexpected end of input"),
        }
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn marker(&mut self) -> Result<Marker, WireError> {
        Ok(Marker::from_u8(self.be::<1>()?[0]))
    }

    fn len_of(&mut self, m: Marker) -> Result<Option<(Kind, usize)>, WireError> {
        Ok(Some(match m {
            Marker::FixStr(n) => (Kind::Str, usize::from(n)),
            Marker::Str8 => (Kind::Str, usize::from(self.be::<1>()?[0])),
            Marker::Str16 => (Kind::Str, usize::from(u16::from_be_bytes(self.be()?))),
            Marker::Str32 => (Kind::Str, u32::from_be_bytes(self.be()?) as usize),
            Marker::FixArray(n) => (Kind::Array, usize::from(n)),
            Marker::Array16 => (Kind::Array, usize::from(u16::from_be_bytes(self.be()?))),
            Marker::Array32 => (Kind::Array, u32::from_be_bytes(self.be()?) as usize),
            Marker::FixMap(n) => (Kind::Map, usize::from(n)),
            Marker::Map16 => (Kind::Map, usize::from(u16::from_be_bytes(self.be()?))),
            Marker::Map32 => (Kind::Map, u32::from_be_bytes(self.be()?) as usize),
            _ => return Ok(None),
        }))
    }

    /// A map key's bytes (not checked as UTF-8: keys are only compared with declared names).
    fn key_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let m = self.marker()?;
        match self.len_of(m)? {
            Some((Kind::Str, len)) => self.take(len),
            _ => err("map keys must be strings"),
        }
    }

    fn key(&mut self) -> Result<&'a str, WireError> {
        let k = self.key_bytes()?;
        std::str::from_utf8(k).or_else(|_| err("string is not valid UTF-8"))
    }

    /// Checks one value's structure and steps over it without building anything.
    fn skip(&mut self, depth: usize) -> Result<(), WireError> {
        let start = self.pos;
        let m = self.marker()?;
        match self.len_of(m)? {
            Some((Kind::Str, len)) => {
                self.take(len)?;
            }
            Some((Kind::Array, len)) => {
                let depth = nested(depth)?;
                for _ in 0..len {
                    self.skip(depth)?;
                }
            }
            Some((Kind::Map, len)) => {
                let depth = nested(depth)?;
                for _ in 0..len {
                    self.key_bytes()?;
                    self.skip(depth)?;
                }
            }
            None => {
                self.pos = start;
                self.value(depth)?;
            }
        }
        Ok(())
    }

    /// Reads one value. Lists are built; maps are checked and skipped (no attribute type holds
    /// a map, so only their type matters).
    fn value(&mut self, depth: usize) -> Result<Scalar<'a>, WireError> {
        let m = self.marker()?;
        let number = |v: Scalar<'a>| Ok(v);
        match m {
            Marker::Null => Ok(Scalar::Nil),
            Marker::True => Ok(Scalar::Bool(true)),
            Marker::False => Ok(Scalar::Bool(false)),
            Marker::FixPos(n) => number(Scalar::Int(i64::from(n))),
            Marker::FixNeg(n) => number(Scalar::Int(i64::from(n))),
            Marker::U8 => number(Scalar::Int(i64::from(self.be::<1>()?[0]))),
            Marker::U16 => number(Scalar::Int(i64::from(u16::from_be_bytes(self.be()?)))),
            Marker::U32 => number(Scalar::Int(i64::from(u32::from_be_bytes(self.be()?)))),
            Marker::U64 => {
                let v = u64::from_be_bytes(self.be()?);
                match i64::try_from(v) {
                    Ok(i) => number(Scalar::Int(i)),
                    Err(_) => err(format!("integer {v} is out of range")),
                }
            }
            Marker::I8 => number(Scalar::Int(i64::from(i8::from_be_bytes(self.be()?)))),
            Marker::I16 => number(Scalar::Int(i64::from(i16::from_be_bytes(self.be()?)))),
            Marker::I32 => number(Scalar::Int(i64::from(i32::from_be_bytes(self.be()?)))),
            Marker::I64 => number(Scalar::Int(i64::from_be_bytes(self.be()?))),
            Marker::F32 => float(f64::from(f32::from_be_bytes(self.be()?))),
            Marker::F64 => float(f64::from_be_bytes(self.be()?)),
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                err("binary values are not accepted; use a string")
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => err("extension values are not accepted"),
            Marker::Reserved => err("invalid messagepack marker 0xc1"),
            other => match self.len_of(other)? {
                Some((Kind::Str, len)) => Ok(Scalar::Str(self.take(len)?)),
                Some((Kind::Array, len)) => {
                    let depth = nested(depth)?;
                    let mut items = Vec::with_capacity(len.min(self.buf.len() - self.pos));
                    for _ in 0..len {
                        items.push(self.value(depth)?);
                    }
                    Ok(Scalar::List(items))
                }
                Some((Kind::Map, len)) => {
                    let depth = nested(depth)?;
                    for _ in 0..len {
                        self.key_bytes()?;
                        self.skip(depth)?;
                    }
                    Ok(Scalar::Map)
                }
                None => err("invalid messagepack"),
            },
        }
    }
}

/// Decodes one canonical MessagePack value (used for variant values in the compiled rules,
/// so the module carries no second MessagePack decoder).
pub(crate) fn decode_value(bytes: &[u8]) -> Result<flagforge_protocol::Value, WireError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.full(0)?;
    if r.pos != bytes.len() {
        return err("trailing bytes after the value");
    }
    Ok(v)
}

impl Reader<'_> {
    fn full(&mut self, depth: usize) -> Result<flagforge_protocol::Value, WireError> {
        use flagforge_protocol::Value;
        let start = self.pos;
        let m = self.marker()?;
        match self.len_of(m)? {
            Some((Kind::Map, len)) => {
                let depth = nested(depth)?;
                let mut map = std::collections::BTreeMap::new();
                for _ in 0..len {
                    let k = self.key()?.to_owned();
                    let v = self.full(depth)?;
                    if map.insert(k, v).is_some() {
                        return err("duplicate map key");
                    }
                }
                Ok(Value::Map(map))
            }
            Some((Kind::Array, len)) => {
                let depth = nested(depth)?;
                let mut items = Vec::with_capacity(len.min(self.buf.len() - self.pos));
                for _ in 0..len {
                    items.push(self.full(depth)?);
                }
                Ok(Value::List(items))
            }
            _ => {
                self.pos = start;
                Ok(match self.value(depth)? {
                    Scalar::Nil => Value::Null,
                    Scalar::Bool(b) => Value::Bool(b),
                    Scalar::Int(i) => Value::Int(i),
                    Scalar::Float(f) => Value::Float(f),
                    Scalar::Str(b) => match std::str::from_utf8(b) {
                        Ok(s) => Value::String(s.to_owned()),
                        Err(_) => return err("string is not valid UTF-8"),
                    },
                    Scalar::List(_) | Scalar::Map => return err("unexpected container"),
                })
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Array,
    Map,
}

fn nested(depth: usize) -> Result<usize, WireError> {
    let d = depth + 1;
    if d > MAX_DEPTH {
        return err(format!("value nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(d)
}

/// Floats in canonical form: integral values within ±2^53 are integers; non-finite refused.
fn float<'a>(f: f64) -> Result<Scalar<'a>, WireError> {
    if !f.is_finite() {
        return err("non-finite number");
    }
    if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER {
        Ok(Scalar::Int(f as i64))
    } else {
        Ok(Scalar::Float(f))
    }
}

/// Reads a context map into one slot per declared attribute (only those set in `needs`, all
/// when `None`); every other value is still checked, then dropped.
pub(crate) fn bind_bytes<'a>(
    schema: &[AttrIr],
    alias: Option<usize>,
    bytes: &'a [u8],
    needs: Option<&Needs>,
) -> Result<Slots<'a>, WireError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let m = r.marker()?;
    let len = match r.len_of(m)? {
        Some((Kind::Map, len)) => len,
        _ => return err("context must be a map"),
    };
    let mut slots = Slots::new(schema.len(), needs);
    // With a large schema, find each key by binary search rather than walking the schema.
    let walk = schema.len() <= crate::bind::SPARSE_ABOVE;
    let mut seen = Seen::new(schema.len() + 1);
    // Canonical contexts list keys in byte order, like the schema: walk both together, and
    // fall back to binary search if the input is not in order.
    let mut cursor = 0usize;
    let mut previous: &[u8] = &[];
    for _ in 0..len {
        let key = r.key_bytes()?;
        let index = if walk && key >= previous {
            previous = key;
            loop {
                match schema
                    .get(cursor)
                    .map(|a| byte_order(a.name.as_bytes(), key))
                {
                    Some(std::cmp::Ordering::Less) => cursor += 1,
                    Some(std::cmp::Ordering::Equal) => break Some(cursor),
                    _ => break None,
                }
            }
        } else {
            schema.binary_search_by(|a| a.name.as_bytes().cmp(key)).ok()
        };
        // OpenFeature's `targetingKey` binds the attribute it stands for, unless the
        // context sets that attribute itself (before or after it): one more `seen` bit.
        let (index, aliased) = match (index, alias) {
            (None, Some(a)) if key == flagforge_protocol::TARGETING_KEY.as_bytes() => {
                (Some(a), true)
            }
            (index, _) => (index, false),
        };
        let Some(i) = index else {
            r.skip(1)?;
            continue;
        };
        if seen.insert(if aliased { schema.len() } else { i }) {
            return err(format!("duplicate key `{}`", String::from_utf8_lossy(key)));
        }
        if wanted(needs, i) && !(aliased && slots.is_set(i)) {
            let value = r.value(1)?;
            if let Some(attr) = schema.get(i) {
                let slot = convert(attr, value);
                if !matches!(slot, Slot::Missing) {
                    slots.set(i, slot);
                }
            }
        } else {
            r.skip(1)?;
        }
    }
    if r.pos != bytes.len() {
        return err("trailing bytes after the context");
    }
    Ok(slots)
}

/// Byte order, deciding on the first byte without a `memcmp` call when it differs.
fn byte_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Which declared attributes were already read: a bit set, on the stack for up to 128.
enum Seen {
    Bits(u128),
    Vec(Vec<bool>),
}

impl Seen {
    fn new(n: usize) -> Seen {
        if n <= 128 {
            Seen::Bits(0)
        } else {
            Seen::Vec(vec![false; n])
        }
    }

    /// Marks `i`; returns true if it was already marked.
    fn insert(&mut self, i: usize) -> bool {
        match self {
            Seen::Bits(bits) => {
                let bit = 1u128 << (i % 128);
                let was = *bits & bit != 0;
                *bits |= bit;
                was
            }
            Seen::Vec(v) => v.get_mut(i).is_some_and(|b| std::mem::replace(b, true)),
        }
    }
}
