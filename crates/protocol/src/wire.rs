//! The one canonical MessagePack context reader, shared by the module and every host.
//!
//! Hand-written over `rmp::Marker` rather than decoding through serde: the module reads only
//! the attributes a flag needs, borrows their strings from the input, and skips everything
//! else without building values — decoding a whole `Context` first cost more than evaluating
//! the rules. The accepted input is the canonical encoding of [`crate::value`]: string keys,
//! no binary or extension values, finite numbers, integers within `i64`, nesting at most
//! [`MAX_DEPTH`] deep, no duplicate keys, nothing after the value. Hosts' `decode_context`
//! and the module's binding (evaluator-core) both read through [`Reader`], so they accept and
//! refuse the same bytes.

use crate::limits::MAX_DEPTH;
use crate::value::{Value, MAX_SAFE_INTEGER};
use rmp::Marker;

/// Why context bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(msg.into()))
}

/// A raw context value before typing: what [`Reader::value`] reads.
#[derive(Debug)]
pub enum Scalar<'a> {
    /// `nil`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer (also an integral float within ±2^53, as canonical form requires).
    Int(i64),
    /// A non-integral finite float.
    Float(f64),
    /// String bytes; UTF-8 is checked only when a wanted value is converted.
    Str(&'a [u8]),
    /// A list, read item by item.
    List(Vec<Scalar<'a>>),
    /// A map: checked and skipped (no attribute type holds a map, only its type matters).
    Map,
}

impl Scalar<'_> {
    /// The type's name in error messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::Nil => "null",
            Scalar::Bool(_) => "bool",
            Scalar::Int(_) => "int",
            Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
            Scalar::List(_) => "list",
            Scalar::Map => "map",
        }
    }
}

/// A cursor over canonical MessagePack bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Reads a map header and returns its entry count.
    pub fn map_len(&mut self) -> Result<usize, WireError> {
        let m = self.marker()?;
        match self.len_of(m)? {
            Some((Kind::Map, len)) => Ok(len),
            _ => err("context must be a map"),
        }
    }

    /// Checks that the whole input was read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            err("trailing bytes after the value")
        }
    }

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
    pub fn key_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let m = self.marker()?;
        match self.len_of(m)? {
            Some((Kind::Str, len)) => self.take(len),
            _ => err("map keys must be strings"),
        }
    }

    /// Reads a positional context's key (ABI v2): an attribute slot, an unsigned integer.
    pub fn slot_key(&mut self) -> Result<u32, WireError> {
        Ok(match self.marker()? {
            Marker::FixPos(n) => u32::from(n),
            Marker::U8 => u32::from(self.be::<1>()?[0]),
            Marker::U16 => u32::from(u16::from_be_bytes(self.be()?)),
            Marker::U32 => u32::from_be_bytes(self.be()?),
            _ => return err("map keys must be attribute slots"),
        })
    }

    /// Checks the next value (as [`Reader::skip`]) and returns its bytes.
    pub fn raw_value(&mut self, depth: usize) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        self.skip(depth)?;
        self.buf
            .get(start..self.pos)
            .ok_or_else(|| WireError("unexpected end of input".into()))
    }

    fn key(&mut self) -> Result<&'a str, WireError> {
        let k = self.key_bytes()?;
        std::str::from_utf8(k).or_else(|_| err("string is not valid UTF-8"))
    }

    /// Checks one value's structure and steps over it without building anything.
    pub fn skip(&mut self, depth: usize) -> Result<(), WireError> {
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
    pub fn value(&mut self, depth: usize) -> Result<Scalar<'a>, WireError> {
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

/// Decodes one canonical MessagePack value, refusing trailing bytes (variant values in the
/// compiled rules are read with it, so the module carries no second decoder).
pub fn decode_value(bytes: &[u8]) -> Result<Value, WireError> {
    let mut r = Reader::new(bytes);
    let v = r.full(0)?;
    r.finish()?;
    Ok(v)
}

impl Reader<'_> {
    /// Reads one value, building maps and lists.
    pub fn full(&mut self, depth: usize) -> Result<Value, WireError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{decode_context, encode_context, Context};

    /// Why `decode_context` refused `bytes`.
    fn reason(bytes: &[u8]) -> String {
        match decode_context(bytes) {
            Err(crate::CodecError::Decode(why)) => why,
            other => panic!("{other:?}"),
        }
    }

    fn ctx() -> Vec<u8> {
        let mut c = Context::new();
        c.insert("market".into(), Value::from("FR"));
        c.insert("n".into(), Value::Int(3));
        encode_context(&c).unwrap()
    }

    #[test]
    fn a_context_round_trips() {
        let c = decode_context(&ctx()).unwrap();
        assert_eq!(c.get("market"), Some(&Value::from("FR")));
        assert_eq!(c.get("n"), Some(&Value::Int(3)));
    }

    #[test]
    fn trailing_bytes_are_refused_by_hosts_as_by_the_module() {
        let mut bytes = ctx();
        bytes.push(0xc0);
        assert_eq!(reason(&bytes), "trailing bytes after the value");
        let mut r = Reader::new(&bytes);
        let n = r.map_len().unwrap();
        for _ in 0..n {
            r.key_bytes().unwrap();
            r.skip(1).unwrap();
        }
        assert!(r.finish().is_err());
    }

    #[test]
    fn non_canonical_input_is_refused_with_a_reason() {
        for (bytes, want) in [
            (vec![0x91, 0x01], "context must be a map"),
            (vec![0x81, 0x01, 0x01], "map keys must be strings"),
            (
                vec![0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02],
                "duplicate map key",
            ),
            (
                vec![0x81, 0xa1, b'a', 0xc4, 0x00],
                "binary values are not accepted",
            ),
            (
                vec![0x81, 0xa1, b'a', 0xc1],
                "invalid messagepack marker 0xc1",
            ),
        ] {
            let why = reason(&bytes);
            assert!(why.starts_with(want), "{bytes:02x?}: {why}");
        }
    }
}
