//! Decision contexts for JavaScript (browsers and Node), through wasm-bindgen: signing and
//! verifying the `flagforge-decision` header with the Rust code every host uses
//! (`flagforge-decision`, Ed25519 from `flagforge-distribution`).
//!
//! Evaluation is not here: the JavaScript runtime (`bindings/js/engine.js`) runs modules
//! without any wasm of its own, so a page that only evaluates downloads no Ed25519. This
//! crate is the `flagforge/decision` entry point, loaded by code that decides or verifies
//! (`bindings/js/decision.js` computes the answers with the JavaScript engine and hands them
//! here to be signed).

mod context;

use std::collections::BTreeMap;

use flagforge_decision::{Carried, DecisionContext, RulesetRef};
use flagforge_distribution::{KeyPair, PublicKey, TrustedKeys};
use flagforge_protocol::{Reason, Value};
use js_sys::{Array, Reflect};
use wasm_bindgen::prelude::*;

pub use context::{to_value, ContextError};

fn error(code: &'static str, message: impl Into<String>) -> JsValue {
    let e = js_sys::Error::new(&message.into());
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    e.into()
}

/// A value as JavaScript sees it: integers within ±2^53 as numbers, larger ones as `BigInt`
/// (so nothing is silently rounded), maps as plain objects.
fn value_to_js(v: &Value) -> JsValue {
    match v {
        Value::Null => JsValue::NULL,
        Value::Bool(b) => JsValue::from_bool(*b),
        Value::Int(i) if i.unsigned_abs() <= 1 << 53 => JsValue::from_f64(*i as f64),
        Value::Int(i) => js_sys::BigInt::from(*i).into(),
        Value::Float(f) => JsValue::from_f64(*f),
        Value::String(s) => JsValue::from_str(s),
        Value::List(items) => items.iter().map(value_to_js).collect::<Array>().into(),
        Value::Map(m) => {
            let o = js_sys::Object::new();
            for (k, v) in m {
                let _ = js_sys::Object::define_property(
                    &o,
                    &JsValue::from_str(k),
                    &property(value_to_js(v)),
                );
            }
            o.into()
        }
    }
}

/// A plain data property (so a key named `__proto__` is a member, not the prototype).
fn property(value: JsValue) -> js_sys::Object {
    let d = js_sys::Object::new();
    for (k, v) in [
        ("value", value),
        ("enumerable", JsValue::TRUE),
        ("writable", JsValue::TRUE),
        ("configurable", JsValue::TRUE),
    ] {
        let _ = Reflect::set(&d, &k.into(), &v);
    }
    d
}

fn string(o: &JsValue, name: &str) -> Option<String> {
    Reflect::get(o, &name.into()).ok()?.as_string()
}

/// One flag's answer (a `FlagResult` from `FlagEngine.evaluate`) as a carried decision.
fn carried(result: &JsValue) -> Result<(String, Carried), JsValue> {
    let key = string(result, "key").ok_or_else(|| error("bad_result", "a result has no key"))?;
    let reason = string(result, "reason")
        .and_then(|r| Reason::ALL.into_iter().find(|x| x.as_str() == r))
        .ok_or_else(|| error("bad_result", format!("`{key}`: unknown reason")))?;
    let value = Reflect::get(result, &"value".into()).unwrap_or(JsValue::NULL);
    let value =
        to_value(&value, &format!("{key}.value"), 1).map_err(|e| error("bad_result", e.0))?;
    let carried = Carried {
        ruleset: 0,
        value,
        variant: string(result, "variant"),
        reason,
    };
    Ok((key, carried))
}

/// Signs the answers `results` (results of `FlagEngine.evaluate` for one module) as a decision
/// context header value (`flagforge-decision`), exactly as `flagforge decide` and the Rust hosts
/// make it. `secretKey` is the text of a key file from `flagforge keygen`. Throws an `Error`
/// with `code` `bad_key` (a configuration mistake, not input).
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen(js_name = signDecision)]
pub fn sign_decision(
    ruleset: &str,
    sha256: &str,
    #[wasm_bindgen(unchecked_param_type = "FlagResult[]")] results: Vec<JsValue>,
    #[wasm_bindgen(js_name = correlationId)] correlation_id: &str,
    #[wasm_bindgen(js_name = secretKey)] secret_key: &str,
    #[wasm_bindgen(js_name = ttlMs)] ttl_ms: f64,
    version: Option<f64>,
    #[wasm_bindgen(js_name = nowMs)] now_ms: Option<f64>,
) -> Result<String, JsValue> {
    let key = KeyPair::from_text(secret_key.trim())
        .map_err(|e| error("bad_key", format!("not a flagforge secret key: {e}")))?;
    let now = now_ms.unwrap_or_else(js_sys::Date::now) as i64;
    let decisions = results
        .iter()
        .map(carried)
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    let d = DecisionContext {
        correlation_id: correlation_id.to_owned(),
        decided_at_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms as i64),
        key_id: String::new(),
        rulesets: vec![RulesetRef {
            name: ruleset.to_owned(),
            version: version.map(|v| v as u64),
            sha256: sha256.to_owned(),
        }],
        decisions,
        subject: None,
    };
    Ok(d.encode(&key))
}

/// Verifies a decision context header value against trusted public keys (texts of `.pub`
/// files from `flagforge keygen`). Never throws: `{ ok: true, context }` or
/// `{ ok: false, kind, error }` with `kind` one of `malformed`, `unsupported_format`,
/// `unknown_key`, `bad_signature`, `expired`, `bad_key`.
#[wasm_bindgen(js_name = verifyDecision)]
pub fn verify_decision(
    header: &str,
    #[wasm_bindgen(js_name = publicKeys)] public_keys: Vec<String>,
    #[wasm_bindgen(js_name = nowMs)] now_ms: Option<f64>,
) -> JsValue {
    let out = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&out, &JsValue::from_str(k), &v);
    };
    let keys: Result<Vec<_>, _> = public_keys
        .iter()
        .map(|k| PublicKey::from_text(k.trim()))
        .collect();
    let keys = match keys {
        Ok(k) => k,
        Err(e) => {
            set("ok", JsValue::FALSE);
            set("kind", "bad_key".into());
            set("error", format!("not a flagforge public key: {e}").into());
            return out.into();
        }
    };
    let now = now_ms.unwrap_or_else(js_sys::Date::now) as i64;
    match DecisionContext::verify(header, &TrustedKeys::new(keys), now) {
        Ok(d) => {
            set("ok", JsValue::TRUE);
            set("context", value_to_js(&d.describe()));
        }
        Err(e) => {
            set("ok", JsValue::FALSE);
            set("kind", e.kind().into());
            set("error", e.to_string().into());
        }
    }
    out.into()
}
