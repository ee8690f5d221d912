//! JavaScript values to flagforge [`Value`]s under the canonical rules (ABI.md), for the
//! values of the answers a decision context carries; the same rules as the JavaScript
//! runtime's encoder (`bindings/js/msgpack.js`).
//!
//! Hand-written rather than `serde_wasm_bindgen::from_value` because the canonical rules are
//! about JavaScript specifics serde does not see: `undefined` members are absent (as
//! `JSON.stringify` drops them), `1.0` and `1` are one number, `BigInt`s are integers,
//! functions, symbols and non-finite numbers are refused with the path that holds them.

use std::collections::BTreeMap;

use flagforge_protocol::limits::MAX_DEPTH;
use flagforge_protocol::Value;
use js_sys::{Array, BigInt, Object};
use wasm_bindgen::{JsCast, JsValue};

/// Why a JavaScript value is not a usable context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextError(pub String);

impl std::fmt::Display for ContextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JavaScript value as a canonical [`Value`]; `path` names it in errors, `depth` is its
/// nesting (an attribute's value is at 1).
pub fn to_value(js: &JsValue, path: &str, depth: usize) -> Result<Value, ContextError> {
    if js.is_null() || js.is_undefined() {
        return Ok(Value::Null);
    }
    if let Some(b) = js.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Some(n) = js.as_f64() {
        return Value::number(n)
            .ok_or_else(|| ContextError(format!("{path}: {n} is not a finite number")));
    }
    if let Some(s) = js.as_string() {
        return Ok(Value::String(s));
    }
    if js.is_bigint() {
        let b: BigInt = js.clone().unchecked_into();
        return i64::try_from(b.clone()).map(Value::Int).map_err(|_| {
            ContextError(format!(
                "{path}: {} does not fit a 64-bit signed integer",
                String::from(b.to_string(10).unwrap_or_else(|_| "the BigInt".into()))
            ))
        });
    }
    if depth >= MAX_DEPTH {
        return Err(ContextError(format!(
            "{path}: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if Array::is_array(js) {
        let arr: &Array = js.unchecked_ref();
        let mut out = Vec::with_capacity(arr.length() as usize);
        for (i, item) in arr.iter().enumerate() {
            out.push(to_value(&item, &format!("{path}[{i}]"), depth + 1)?);
        }
        return Ok(Value::List(out));
    }
    if js.is_function() || js.is_symbol() {
        return Err(ContextError(format!(
            "{path}: functions and symbols cannot be context values"
        )));
    }
    if let Some(date) = js.dyn_ref::<js_sys::Date>() {
        // Timestamps travel as RFC 3339 strings, as in JSON.
        return Ok(Value::String(String::from(date.to_iso_string())));
    }
    if js.is_object() {
        let entries = Object::entries(js.unchecked_ref());
        let mut map = BTreeMap::new();
        for entry in entries.iter() {
            let pair: Array = entry.unchecked_into();
            let key = pair.get(0).as_string().unwrap_or_default();
            let value = pair.get(1);
            if value.is_undefined() {
                continue;
            }
            let v = to_value(&value, &format!("{path}.{key}"), depth + 1)?;
            map.insert(key, v);
        }
        return Ok(Value::Map(map));
    }
    Err(ContextError(format!("{path}: unsupported value")))
}
