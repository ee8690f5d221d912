//! flagforge for JavaScript and TypeScript (browsers and Node), through wasm-bindgen.
//!
//! [`FlagEngine`] runs a **published module's own bytes** with the JavaScript engine's
//! WebAssembly: this crate holds no evaluator. It does what every host does — validate the
//! module, encode the context canonically (the `flagforge-protocol` code the Rust hosts use),
//! call the module ABI (ABI.md), decode results — so the same module and context give the same
//! result bytes here as in wasmtime and natively. Bad input never throws: it becomes a result
//! with reason `ERROR` (the flag's `on_error` variant), as in `wasm-host`.
//!
//! What a browser cannot give: a fuel budget (JavaScript engines have no instruction metering),
//! so a module is trusted to terminate; hosts verify signatures before serving modules, and the
//! browser loads them only from a host.

mod context;

use std::cell::RefCell;
use std::rc::Rc;

use flagforge_protocol::abi;
use flagforge_protocol::limits::{MAX_CONTEXT_BYTES, MAX_MODULE_BYTES};
use flagforge_protocol::value::encode_context;
use flagforge_protocol::{decode, encode, Manifest, Resolution, Value};
use flagforge_runtime::{load, options, CallError, InputRegion, Prepared, Runtime, EMPTY_CONTEXT};
use js_sys::{Array, Function, Reflect, Uint8Array, WebAssembly};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

pub use context::{to_context, ContextError};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** A flag's answer; the shape of OpenFeature's resolution details. */
export interface FlagResult {
  key: string;
  value: unknown;
  variant?: string;
  reason: "STATIC" | "DEFAULT" | "TARGETING_MATCH" | "SPLIT" | "DISABLED" | "CACHED" | "STALE" | "ERROR";
  errorCode?: "PROVIDER_NOT_READY" | "FLAG_NOT_FOUND" | "PARSE_ERROR" | "TYPE_MISMATCH" | "TARGETING_KEY_MISSING" | "INVALID_CONTEXT" | "PROVIDER_FATAL" | "GENERAL";
  errorMessage?: string;
  explain?: { rule?: string; steps: { check: string; source?: string; outcome: string }[] };
}
/** An evaluation context: attribute name to JSON-like value (BigInt allowed for integers). */
export type EvaluationContext = Record<string, unknown>;
"#;

fn load_error(code: &'static str, message: impl Into<String>) -> JsValue {
    let e = js_sys::Error::new(&message.into());
    e.set_name("FlagEngineLoadError");
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    e.into()
}

fn serializer() -> serde_wasm_bindgen::Serializer {
    serde_wasm_bindgen::Serializer::new()
        .serialize_maps_as_objects(true)
        .serialize_missing_as_null(true)
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
                let _ = Reflect::set(&o, &JsValue::from_str(k), &value_to_js(v));
            }
            o.into()
        }
    }
}

/// A result in the shape of OpenFeature's resolution details (camelCase).
fn to_js(r: &Resolution) -> JsValue {
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &v);
    };
    set("key", JsValue::from_str(&r.key));
    set("value", value_to_js(&r.value));
    if let Some(v) = &r.variant {
        set("variant", JsValue::from_str(v));
    }
    set("reason", JsValue::from_str(r.reason.as_str()));
    if let Some(c) = r.error_code {
        set("errorCode", JsValue::from_str(c.as_str()));
    }
    if let Some(m) = &r.error_message {
        set("errorMessage", JsValue::from_str(m));
    }
    if let Some(e) = &r.explain {
        set(
            "explain",
            e.serialize(&serializer()).unwrap_or(JsValue::NULL),
        );
    }
    o.into()
}

/// The module's instance and its exports, resolved once.
struct Instance {
    memory: WebAssembly::Memory,
    input: Function,
    evaluate: Function,
    evaluate_all: Function,
    /// The instance's input region as last reserved.
    region: std::cell::Cell<InputRegion>,
}

fn export(exports: &JsValue, name: &str) -> Result<JsValue, JsValue> {
    let v = Reflect::get(exports, &name.into())?;
    if v.is_undefined() {
        return Err(load_error(
            load::MISSING_EXPORT,
            format!("the module does not export `{name}`"),
        ));
    }
    Ok(v)
}

fn function(exports: &JsValue, name: &str) -> Result<Function, JsValue> {
    export(exports, name)?.dyn_into::<Function>().map_err(|_| {
        load_error(
            load::MISSING_EXPORT,
            format!("the module's `{name}` is not a function"),
        )
    })
}

fn as_u32(v: &JsValue) -> Option<u32> {
    // i32 results arrive as (signed) numbers.
    v.as_f64().map(|f| (f as i64) as u32)
}

fn as_u64(v: &JsValue) -> Option<u64> {
    let big: js_sys::BigInt = v.clone().dyn_into().ok()?;
    let unsigned = js_sys::BigInt::as_uint_n(64.0, &big);
    u64::try_from(unsigned).ok()
}

impl Instance {
    async fn new(module: &WebAssembly::Module) -> Result<Instance, JsValue> {
        let promise = WebAssembly::instantiate_module(module, &js_sys::Object::new());
        let instance: WebAssembly::Instance = JsFuture::from(promise)
            .await
            .map_err(|e| load_error(load::INSTANTIATE, trap_text(&e)))?
            .dyn_into()?;
        let exports = instance.exports();
        let memory = export(&exports, abi::EXPORT_MEMORY)?
            .dyn_into::<WebAssembly::Memory>()
            .map_err(|_| load_error(load::MISSING_EXPORT, "`memory` is not a memory"))?;
        let version = function(&exports, abi::EXPORT_ABI_VERSION)?
            .call0(&JsValue::NULL)
            .map_err(|e| {
                load_error(load::UNUSABLE, format!("ff_abi_version: {}", trap_text(&e)))
            })?;
        if as_u32(&version) != Some(abi::ABI_VERSION) {
            return Err(load_error(
                load::ABI_VERSION,
                format!(
                    "the module speaks ABI version {:?}; this package speaks {}",
                    version.as_f64(),
                    abi::ABI_VERSION
                ),
            ));
        }
        Ok(Instance {
            memory,
            input: function(&exports, abi::EXPORT_INPUT)?,
            evaluate: function(&exports, abi::EXPORT_EVALUATE)?,
            evaluate_all: function(&exports, abi::EXPORT_EVALUATE_ALL)?,
            region: std::cell::Cell::default(),
        })
    }

    fn bytes(&self) -> Uint8Array {
        // Re-read the buffer every time: growing memory detaches the old one.
        Uint8Array::new(&self.memory.buffer())
    }

    /// Writes `context` into the input region, reserving a larger one first when it does not
    /// fit (the region only grows). Returns the context's length.
    fn write_input(&self, context: &[u8]) -> Result<u32, CallError> {
        let len = u32::try_from(context.len()).map_err(|_| CallError::OutOfMemory)?;
        let mut region = self.region.get();
        let ptr = region.fit(len, |cap| {
            let ptr = self
                .input
                .call1(&JsValue::NULL, &cap.into())
                .map_err(trap)?;
            Ok(as_u32(&ptr).unwrap_or(0))
        })?;
        self.region.set(region);
        let mem = self.bytes();
        if u64::from(ptr) + u64::from(len) > u64::from(mem.length()) {
            return Err(CallError::BadResult(
                "input region lies outside memory".into(),
            ));
        }
        mem.subarray(ptr, ptr + len).copy_from(context);
        Ok(len)
    }

    /// One call: `ff_evaluate` (`flag` `Some`) or `ff_evaluate_all`; the answer's bytes.
    fn call(&self, flag: Option<u32>, context: &[u8], options: u32) -> Result<Vec<u8>, CallError> {
        let len = self.write_input(context)?;
        let packed = match flag {
            Some(f) => self
                .evaluate
                .call3(&JsValue::NULL, &f.into(), &len.into(), &options.into()),
            None => self
                .evaluate_all
                .call2(&JsValue::NULL, &len.into(), &options.into()),
        }
        .map_err(trap)?;
        let (ptr, len) = abi::unpack(
            as_u64(&packed).ok_or_else(|| CallError::BadResult("not an i64 location".into()))?,
        );
        let mem = self.bytes();
        if u64::from(ptr) + u64::from(len) > u64::from(mem.length()) {
            return Err(CallError::BadResult(format!(
                "answer {ptr}+{len} lies outside memory"
            )));
        }
        let mut out = vec![0u8; len as usize];
        mem.subarray(ptr, ptr + len).copy_to(&mut out);
        Ok(out)
    }
}

fn trap(e: JsValue) -> CallError {
    let message = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into());
    CallError::Trap(message)
}

/// A loaded flagforge module, ready to evaluate.
#[wasm_bindgen]
pub struct FlagEngine {
    module: WebAssembly::Module,
    instance: Rc<RefCell<Option<Instance>>>,
    /// Addressing, encoding, expansion and remembered answers (`flagforge-runtime`).
    runtime: Runtime,
    manifest_js: JsValue,
    hash: String,
    size: usize,
}

#[wasm_bindgen]
impl FlagEngine {
    /// Validates, compiles and instantiates module bytes (what `flagforge build` wrote, or the
    /// host daemon's `GET /v1/modules/{ruleset}`). Rejects with an `Error` whose `code` is one
    /// of `too_large`, `invalid_module`, `imports`, `missing_export`, `abi_version`,
    /// `no_rules`, `bad_manifest`.
    pub async fn load(bytes: Uint8Array) -> Result<FlagEngine, JsValue> {
        let data = bytes.to_vec();
        if data.len() > MAX_MODULE_BYTES {
            return Err(load_error(
                load::TOO_LARGE,
                format!(
                    "module is {} bytes; the limit is {MAX_MODULE_BYTES} bytes",
                    data.len()
                ),
            ));
        }
        if data.get(..4) != Some(b"\0asm".as_slice()) {
            return Err(load_error(
                load::BAD_MAGIC,
                "not a WebAssembly module (bad magic bytes)",
            ));
        }
        let compiled = JsFuture::from(WebAssembly::compile(&bytes))
            .await
            .map_err(|e| {
                load_error(
                    load::INVALID_MODULE,
                    format!("not a valid module: {}", trap_text(&e)),
                )
            })?;
        let module: WebAssembly::Module = compiled.dyn_into()?;
        if WebAssembly::Module::imports(&module).length() > 0 {
            return Err(load_error(
                load::IMPORTS,
                "the module imports functions; flagforge modules import nothing",
            ));
        }
        let instance = Instance::new(&module).await?;
        let manifest = read_manifest(&module).await?;
        let manifest_js = manifest.serialize(&serializer())?;
        let hash = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut runtime = Runtime::new(manifest, MAX_CONTEXT_BYTES);
        // The answers of flags that read nothing cannot change: ask once, remember.
        for flag in runtime.constant_flags() {
            let answer = instance
                .call(Some(flag), EMPTY_CONTEXT, 0)
                .and_then(|record| runtime.finish(flag, &record));
            if let Ok(r) = answer {
                runtime.remember(flag, r);
            }
        }
        Ok(FlagEngine {
            module,
            instance: Rc::new(RefCell::new(Some(instance))),
            runtime,
            manifest_js,
            hash,
            size: data.len(),
        })
    }

    /// The module's manifest: ruleset, context schema, flags with kind, owner, variants.
    #[wasm_bindgen(getter)]
    pub fn manifest(&self) -> JsValue {
        self.manifest_js.clone()
    }

    /// sha256 of the module bytes (hex): the module's identity, as on every host.
    #[wasm_bindgen(getter)]
    pub fn hash(&self) -> String {
        self.hash.clone()
    }

    /// The ruleset name.
    #[wasm_bindgen(getter)]
    pub fn ruleset(&self) -> String {
        self.runtime.manifest().ruleset.clone()
    }

    /// Module size in bytes.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Evaluates one flag. Never throws: problems become a result with reason `ERROR`.
    #[wasm_bindgen(unchecked_return_type = "FlagResult")]
    pub fn evaluate(
        &self,
        flag_key: &str,
        #[wasm_bindgen(unchecked_param_type = "EvaluationContext | null | undefined")]
        context: JsValue,
        explain: Option<bool>,
    ) -> JsValue {
        to_js(&self.resolve(flag_key, &context, explain.unwrap_or(false)))
    }

    /// Evaluates every flag, in declaration order, in one call.
    #[wasm_bindgen(js_name = evaluateAll, unchecked_return_type = "FlagResult[]")]
    pub fn evaluate_all(
        &self,
        #[wasm_bindgen(unchecked_param_type = "EvaluationContext | null | undefined")]
        context: JsValue,
        explain: Option<bool>,
    ) -> JsValue {
        let explain = explain.unwrap_or(false);
        let out = context::pick_context(&context, self.runtime.layout().plan(None).members())
            .map_err(|e| CallError::Encode(e.0))
            .and_then(|ctx| self.runtime.encode(None, &ctx))
            .and_then(|c| {
                self.with_instance(|i| {
                    let records = i.call(None, &c, options(explain))?;
                    self.runtime.finish_all(&records)
                })
            });
        let results: Vec<Resolution> = match out {
            Ok(r) => r,
            // As in wasm-host: each flag from the attributes it reads, so only the flags that
            // read the offending input fail.
            Err(_) => self
                .runtime
                .manifest()
                .flags
                .iter()
                .map(|f| self.resolve(&f.key, &context, explain))
                .collect(),
        };
        results.iter().map(to_js).collect::<Array>().into()
    }

    /// The canonical MessagePack bytes of a context: exactly what a Rust host sends into the
    /// module for the same logical context. Throws a `TypeError` for an unusable context.
    #[wasm_bindgen(js_name = encodeContext)]
    pub fn encode_context(
        #[wasm_bindgen(unchecked_param_type = "EvaluationContext | null | undefined")]
        context: JsValue,
    ) -> Result<Uint8Array, JsValue> {
        let ctx = to_context(&context).map_err(|e| js_sys::TypeError::new(&e.0))?;
        let bytes = encode_context(&ctx).map_err(|e| js_sys::TypeError::new(&e.to_string()))?;
        Ok(Uint8Array::from(bytes.as_slice()))
    }

    /// The result bytes (MessagePack, `ABI.md` "Results") for one flag and canonical context
    /// bytes: the byte-level contract every host is tested on. Context bytes that do not
    /// decode answer `PARSE_ERROR`. (Always a value; `null` is no longer returned.)
    #[wasm_bindgen(js_name = evaluateBytes)]
    pub fn evaluate_bytes(
        &self,
        flag_key: &str,
        context: &[u8],
        explain: Option<bool>,
    ) -> Option<Uint8Array> {
        let explain = explain.unwrap_or(false);
        let r = self.answer(
            flag_key,
            self.runtime.prepare_canonical(flag_key, context, explain),
            explain,
        );
        encode(&r).ok().map(|b| Uint8Array::from(b.as_slice()))
    }

    /// The result bytes for every flag (a MessagePack list in declaration order).
    #[wasm_bindgen(js_name = evaluateAllBytes)]
    pub fn evaluate_all_bytes(&self, context: &[u8], explain: Option<bool>) -> Option<Uint8Array> {
        let explain = explain.unwrap_or(false);
        let results = self
            .runtime
            .answer_all(self.runtime.translate(None, context), |c| {
                self.with_instance(|i| {
                    let records = i.call(None, c, options(explain))?;
                    self.runtime.finish_all(&records)
                })
            });
        encode(&results)
            .ok()
            .map(|b| Uint8Array::from(b.as_slice()))
    }
}

#[wasm_bindgen]
impl FlagEngine {
    /// Decides `flags` once for a workflow and returns the signed decision context header
    /// value (`flagforge-decision`), exactly as `flagforge decide` and the Rust hosts make it.
    /// `secretKey` is the text of a key file from `flagforge keygen`. Throws an `Error` with
    /// `code` `bad_key` or `unknown_flag` (configuration mistakes, not input).
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        flags: Vec<String>,
        #[wasm_bindgen(unchecked_param_type = "EvaluationContext | null | undefined")]
        context: JsValue,
        #[wasm_bindgen(js_name = correlationId)] correlation_id: &str,
        #[wasm_bindgen(js_name = secretKey)] secret_key: &str,
        #[wasm_bindgen(js_name = ttlMs)] ttl_ms: f64,
        version: Option<f64>,
        #[wasm_bindgen(js_name = nowMs)] now_ms: Option<f64>,
    ) -> Result<String, JsValue> {
        let key = flagforge_distribution::KeyPair::from_text(secret_key.trim())
            .map_err(|e| load_error("bad_key", format!("not a flagforge secret key: {e}")))?;
        let now = now_ms.unwrap_or_else(js_sys::Date::now) as i64;
        let mut decisions = std::collections::BTreeMap::new();
        for flag in &flags {
            if self.runtime.manifest().flag(flag).is_none() {
                return Err(load_error(
                    "unknown_flag",
                    format!(
                        "flag `{flag}` is not defined in ruleset `{}`",
                        self.runtime.manifest().ruleset
                    ),
                ));
            }
            let r = self.resolve(flag, &context, false);
            decisions.insert(
                flag.clone(),
                flagforge_decision::Carried {
                    ruleset: 0,
                    value: r.value,
                    variant: r.variant,
                    reason: r.reason,
                },
            );
        }
        let d = flagforge_decision::DecisionContext {
            correlation_id: correlation_id.to_owned(),
            decided_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms as i64),
            key_id: String::new(),
            rulesets: vec![flagforge_decision::RulesetRef {
                name: self.runtime.manifest().ruleset.clone(),
                version: version.map(|v| v as u64),
                sha256: self.hash.clone(),
            }],
            decisions,
            subject: None,
        };
        Ok(d.encode(&key))
    }
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
        .map(|k| flagforge_distribution::PublicKey::from_text(k.trim()))
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
    match flagforge_decision::DecisionContext::verify(
        header,
        &flagforge_distribution::TrustedKeys::new(keys),
        now,
    ) {
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

fn trap_text(e: &JsValue) -> String {
    match trap(e.clone()) {
        CallError::Trap(m) => m,
        _ => String::new(),
    }
}

async fn read_manifest(module: &WebAssembly::Module) -> Result<Manifest, JsValue> {
    let promise = WebAssembly::instantiate_module(module, &js_sys::Object::new());
    let instance: WebAssembly::Instance = JsFuture::from(promise)
        .await
        .map_err(|e| load_error(load::INSTANTIATE, trap_text(&e)))?
        .dyn_into()?;
    let exports = instance.exports();
    let memory: WebAssembly::Memory = export(&exports, abi::EXPORT_MEMORY)?
        .dyn_into()
        .map_err(|_| load_error(load::MISSING_EXPORT, "`memory` is not a memory"))?;
    let packed = function(&exports, abi::EXPORT_MANIFEST)?
        .call0(&JsValue::NULL)
        .map_err(|e| load_error(load::UNUSABLE, format!("ff_manifest: {}", trap_text(&e))))?;
    let (ptr, len) = abi::unpack(
        as_u64(&packed)
            .ok_or_else(|| load_error(load::BAD_MANIFEST, "ff_manifest returned no location"))?,
    );
    let mem = Uint8Array::new(&memory.buffer());
    if u64::from(ptr) + u64::from(len) > u64::from(mem.length()) {
        return Err(load_error(
            load::BAD_MANIFEST,
            "manifest location outside memory",
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    mem.subarray(ptr, ptr + len).copy_to(&mut bytes);
    match decode::<flagforge_protocol::manifest::ManifestReply>(&bytes) {
        Ok(flagforge_protocol::manifest::ManifestReply::Ok(m)) => Ok(m),
        Ok(flagforge_protocol::manifest::ManifestReply::Error(why)) => Err(load_error(
            load::NO_RULES,
            format!("the module cannot serve: {why}"),
        )),
        Err(e) => Err(load_error(
            load::BAD_MANIFEST,
            format!("unreadable manifest: {e}"),
        )),
    }
}

impl FlagEngine {
    /// One flag for a JavaScript context object: only the members its answer can depend on
    /// are read.
    fn resolve(&self, key: &str, context: &JsValue, explain: bool) -> Resolution {
        // Only the members the flag's answer can depend on are read from the object.
        let layout = self.runtime.layout();
        let names = layout
            .flag(key)
            .into_iter()
            .flat_map(|flag| layout.plan(Some(flag)).members());
        match context::pick_context(context, names) {
            Ok(ctx) => self.answer(key, self.runtime.prepare(key, &ctx, explain), explain),
            Err(e) => self.runtime.fallback(key, &CallError::Encode(e.0)),
        }
    }

    fn answer(&self, key: &str, prepared: Prepared, explain: bool) -> Resolution {
        self.runtime.answer(key, prepared, |flag, context| {
            self.with_instance(|i| {
                let record = i.call(Some(flag), context, options(explain))?;
                self.runtime.finish(flag, &record)
            })
        })
    }

    /// Runs `f` on the instance. After a trap the instance is discarded, as in wasm-host, and
    /// a fresh one is instantiated in the background; until it is ready, calls answer
    /// `on_error`.
    fn with_instance<R>(
        &self,
        f: impl FnOnce(&Instance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let result = match self.instance.borrow().as_ref() {
            Some(i) => f(i),
            None => {
                return Err(CallError::Instantiate(
                    "the module is being re-instantiated".into(),
                ))
            }
        };
        if result.as_ref().is_err_and(CallError::discards_instance) {
            self.instance.borrow_mut().take();
            self.reinstantiate();
        }
        result
    }

    fn reinstantiate(&self) {
        let (module, slot) = (self.module.clone(), Rc::clone(&self.instance));
        wasm_bindgen_futures::spawn_local(async move {
            if let Ok(fresh) = Instance::new(&module).await {
                *slot.borrow_mut() = Some(fresh);
            }
        });
    }
}
