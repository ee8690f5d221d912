//! The canonical context value and its one MessagePack encoding.
//!
//! Every host encodes a context to exactly these bytes, so the same logical context gives the
//! same module input everywhere:
//! - maps have string keys, written in ascending byte order of their UTF-8 keys;
//! - a number that is integral and within ±2^53 is an integer, written in MessagePack's
//!   shortest integer form; any other finite number is a 64-bit float; NaN and infinities are
//!   refused;
//! - nesting deeper than [`MAX_DEPTH`] is refused while decoding, without recursion past it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_DEPTH;

/// Largest magnitude at which every integer is exactly representable as an `f64`.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A context attribute value, a variant value or a result value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// Absent value. In a context, `null` is treated like a missing attribute.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (also every integral float within ±2^53).
    Int(i64),
    /// A finite, non-integral (or very large) number.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// A list.
    List(Vec<Value>),
    /// A map with keys in byte order.
    Map(BTreeMap<String, Value>),
}

/// An evaluation context: attribute name to value.
pub type Context = BTreeMap<String, Value>;

impl Value {
    /// Builds a number in canonical form: integral values within ±2^53 become [`Value::Int`].
    /// Returns `None` for NaN and infinities.
    #[must_use]
    pub fn number(f: f64) -> Option<Value> {
        if !f.is_finite() {
            return None;
        }
        if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER {
            // Exact: |f| <= 2^53 and integral.
            Some(Value::Int(f as i64))
        } else {
            Some(Value::Float(f))
        }
    }

    /// A short name of the value's type, for error messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// The string, if this is one.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl Value {
    /// Appends the value's canonical MessagePack encoding (the bytes `rmp_serde` writes for
    /// it through [`Serialize`], written directly: hosts encode a context on every call).
    pub fn write(&self, out: &mut Vec<u8>) {
        use rmp::encode as mp;
        // Writing into a `Vec` cannot fail.
        match self {
            Value::Null => {
                let _ = mp::write_nil(out);
            }
            Value::Bool(b) => {
                let _ = mp::write_bool(out, *b);
            }
            Value::Int(i) => {
                let _ = mp::write_sint(out, *i);
            }
            Value::Float(f) => {
                let _ = mp::write_f64(out, *f);
            }
            Value::String(s) => {
                let _ = mp::write_str(out, s);
            }
            Value::List(items) => {
                let _ = mp::write_array_len(out, items.len() as u32);
                for item in items {
                    item.write(out);
                }
            }
            Value::Map(entries) => {
                let _ = mp::write_map_len(out, entries.len() as u32);
                for (k, v) in entries {
                    let _ = mp::write_str(out, k);
                    v.write(out);
                }
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ValueSeed { depth: 0 }.deserialize(d)
    }
}

/// Decodes a [`Value`] while counting nesting depth, so hostile input cannot exhaust the stack.
#[derive(Clone, Copy)]
pub struct ValueSeed {
    /// Nesting depth of the value about to be decoded (0 at the top).
    pub depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed {
    fn nested<E: de::Error>(self) -> Result<ValueSeed, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(ValueSeed { depth })
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a context value (null, bool, number, string, list or map)")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format_args!("integer {v} is out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Value::number(v).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not accepted; use a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            if entries.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate map key"));
            }
        }
        Ok(Value::Map(entries))
    }
}

/// Decodes a context (a map at the top) from canonical MessagePack, through the one
/// canonical reader ([`crate::wire`]): the same bytes are accepted and refused as in the
/// module, trailing bytes included.
pub fn decode_context(bytes: &[u8]) -> Result<Context, crate::CodecError> {
    match crate::wire::decode_value(bytes).map_err(|e| crate::CodecError::Decode(e.0))? {
        Value::Map(m) => Ok(m),
        other => Err(crate::CodecError::Decode(format!(
            "context must be a map, found {}",
            other.type_name()
        ))),
    }
}

/// Encodes a context to its canonical MessagePack bytes.
pub fn encode_context(ctx: &Context) -> Result<Vec<u8>, crate::CodecError> {
    let mut out = Vec::with_capacity(32 * ctx.len() + 8);
    let _ = rmp::encode::write_map_len(&mut out, ctx.len() as u32);
    for (k, v) in ctx {
        let _ = rmp::encode::write_str(&mut out, k);
        v.write(&mut out);
    }
    Ok(out)
}

#[cfg(feature = "json")]
mod json {
    //! Conversions between JSON and the canonical value (hosts only).
    use super::*;

    /// Failure to turn JSON into a canonical value.
    #[derive(Debug, thiserror::Error)]
    pub enum JsonValueError {
        /// The number cannot be represented canonically.
        #[error("number `{0}` is out of range")]
        NumberOutOfRange(String),
        /// Nesting too deep.
        #[error("value nested deeper than {MAX_DEPTH} levels")]
        TooDeep,
        /// The top level of a context was not an object.
        #[error("context must be a JSON object, found {0}")]
        NotAnObject(&'static str),
    }

    impl Value {
        /// Converts JSON to a canonical value.
        pub fn from_json(json: &serde_json::Value) -> Result<Value, JsonValueError> {
            from_json_at(json, 0)
        }

        /// Converts a flag's value to JSON as its flag's type says: a float-typed flag's
        /// integral value becomes a JSON float (`50.0`), so typed clients accept it.
        #[must_use]
        pub fn to_json_as(&self, float: bool) -> serde_json::Value {
            match self {
                Value::Int(i) if float => serde_json::Number::from_f64(*i as f64)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                other => other.to_json(),
            }
        }

        /// Converts to JSON (integers stay integers).
        #[must_use]
        pub fn to_json(&self) -> serde_json::Value {
            use serde_json::Value as J;
            match self {
                Value::Null => J::Null,
                Value::Bool(b) => J::Bool(*b),
                Value::Int(i) => J::from(*i),
                Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
                Value::String(s) => J::String(s.clone()),
                Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
                Value::Map(m) => {
                    J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
                }
            }
        }
    }

    fn from_json_at(json: &serde_json::Value, depth: usize) -> Result<Value, JsonValueError> {
        use serde_json::Value as J;
        Ok(match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if n.is_u64() {
                    return Err(JsonValueError::NumberOutOfRange(n.to_string()));
                } else {
                    n.as_f64()
                        .and_then(Value::number)
                        .ok_or_else(|| JsonValueError::NumberOutOfRange(n.to_string()))?
                }
            }
            J::String(s) => Value::String(s.clone()),
            J::Array(items) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(JsonValueError::TooDeep);
                }
                Value::List(
                    items
                        .iter()
                        .map(|i| from_json_at(i, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            J::Object(m) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(JsonValueError::TooDeep);
                }
                Value::Map(
                    m.iter()
                        .map(|(k, v)| Ok((k.clone(), from_json_at(v, depth + 1)?)))
                        .collect::<Result<_, _>>()?,
                )
            }
        })
    }

    /// Converts a JSON object to a context.
    pub fn context_from_json(json: &serde_json::Value) -> Result<Context, JsonValueError> {
        match Value::from_json(json)? {
            Value::Map(m) => Ok(m),
            other => Err(JsonValueError::NotAnObject(other.type_name())),
        }
    }
}

#[cfg(feature = "json")]
pub use json::{context_from_json, JsonValueError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_encode_as_integers() {
        assert_eq!(Value::number(3.0), Some(Value::Int(3)));
        assert_eq!(Value::number(-0.0), Some(Value::Int(0)));
        assert_eq!(Value::number(2.5), Some(Value::Float(2.5)));
        assert_eq!(Value::number(1e300), Some(Value::Float(1e300)));
        assert_eq!(Value::number(f64::NAN), None);
    }

    #[test]
    fn map_keys_are_written_in_byte_order() {
        let mut ctx = Context::new();
        ctx.insert("b".into(), Value::Int(1));
        ctx.insert("a".into(), Value::Int(2));
        ctx.insert("é".into(), Value::Int(3));
        let bytes = encode_context(&ctx).unwrap();
        // fixmap(3), "a", 2, "b", 1, "é", 3
        assert_eq!(
            bytes,
            vec![0x83, 0xa1, b'a', 0x02, 0xa1, b'b', 0x01, 0xa2, 0xc3, 0xa9, 0x03]
        );
        assert_eq!(decode_context(&bytes).unwrap(), ctx);
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        // 100,000 nested single-element arrays: 0x91 repeated, then nil.
        let mut bytes = vec![0x81, 0xa1, b'x'];
        bytes.extend(std::iter::repeat_n(0x91u8, 100_000));
        bytes.push(0xc0);
        let err = decode_context(&bytes).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn non_map_context_is_refused() {
        let err = decode_context(&[0x01]).unwrap_err();
        assert!(err.to_string().contains("must be a map"), "{err}");
    }
}

#[cfg(all(test, feature = "json"))]
mod json_tests {
    use super::*;

    /// serde_json without `float_roundtrip` parsed `-1.5e-300` to a neighbouring double, so a
    /// Rust host and JavaScript (`JSON.parse` rounds correctly) encoded the same JSON context to
    /// different bytes. Found by the bindings' encoding corpus.
    #[test]
    fn json_floats_parse_to_the_correctly_rounded_double_like_javascript() {
        for text in [
            "-1.5e-300",
            "0.1",
            "2.2250738585072011e-308",
            "1.7976931348623157e308",
        ] {
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let expected: f64 = text.parse().unwrap();
            assert_eq!(
                Value::from_json(&json).unwrap(),
                Value::number(expected).unwrap(),
                "{text}"
            );
        }
    }
}
