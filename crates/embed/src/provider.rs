//! [`FlagforgeProvider`]: the embedded host as an OpenFeature provider for the `open-feature`
//! crate (0.3). Evaluation is in-process, through the same module bytes every host runs.
//!
//! - `targetingKey` travels in the context; the module binds it to the ruleset's targeting key
//!   attribute unless the context sets that attribute (an explicit attribute wins).
//! - A failed evaluation (wrong-typed context, trap, budget) is an `Err` with its code, so
//!   the SDK runs error hooks and returns the caller's default. A flag read with the wrong
//!   getter is `TYPE_MISMATCH`.
//! - Flag metadata: `ruleset`, `version`, `sha256` (the module hash).
//! - Status: `NotReady` until the rulesets are served, `Ready`, `STALE` when a ruleset went
//!   longer without broker contact than its strictest flag allows, `Error` when nothing could
//!   be loaded. The crate has no event API: [`FlagforgeProvider::events`] delivers
//!   `Ready`, `ConfigurationChanged` (with `flags_changed`), `Stale` and `Error`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode,
    EvaluationReason, EvaluationResult, FlagMetadata, StructValue, Value as OfValue,
};

use crate::{
    Context, Details, EmbedError, ErrorCode, Event, Flags, Reason, Status, Value, ValueType,
};

/// The embedded host as an OpenFeature provider.
#[derive(Debug, Clone)]
pub struct FlagforgeProvider {
    flags: Flags,
    metadata: ProviderMetadata,
    ready_timeout: Duration,
}

impl FlagforgeProvider {
    /// A provider over a started [`Flags`]; `initialize` waits up to 10 s for readiness.
    #[must_use]
    pub fn new(flags: Flags) -> FlagforgeProvider {
        FlagforgeProvider {
            flags,
            metadata: ProviderMetadata::new("flagforge"),
            ready_timeout: Duration::from_secs(10),
        }
    }

    /// How long `initialize` waits for the rulesets to be served.
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> FlagforgeProvider {
        self.ready_timeout = timeout;
        self
    }

    /// Provider events (`Ready`, `ConfigurationChanged`, `Stale`, `Error`).
    #[must_use]
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.flags.events()
    }

    /// The embedded host.
    #[must_use]
    pub fn flags(&self) -> &Flags {
        &self.flags
    }

    fn resolve<T>(
        &self,
        flag: &str,
        ctx: &EvaluationContext,
        want: &[ValueType],
        convert: impl FnOnce(Value) -> Option<T>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        let d = self
            .flags
            .details(flag, &to_context(ctx))
            .map_err(|e| match e {
                EmbedError::NotReady => error(EvaluationErrorCode::ProviderNotReady, e),
                EmbedError::FlagNotFound(_) => error(EvaluationErrorCode::FlagNotFound, e),
                EmbedError::InvalidContext(_) => error(EvaluationErrorCode::InvalidContext, e),
                EmbedError::Setup(_) => error(EvaluationErrorCode::General(e.to_string()), e),
            })?;
        if let Some(code) = d.resolution.error_code {
            let message = d.resolution.error_message.clone().unwrap_or_default();
            return Err(error(code_of(code, &message), message));
        }
        if !want.contains(&d.value_type) {
            return Err(error(
                EvaluationErrorCode::TypeMismatch,
                format!("flag `{flag}` is {}", d.value_type.as_str()),
            ));
        }
        let metadata = metadata(&d);
        let reason = reason_of(d.resolution.reason);
        let variant = d.resolution.variant.clone();
        let value = convert(d.resolution.value).ok_or_else(|| {
            error(
                EvaluationErrorCode::TypeMismatch,
                format!("flag `{flag}` is {}", d.value_type.as_str()),
            )
        })?;
        Ok(ResolutionDetails {
            value,
            variant,
            reason: Some(reason),
            flag_metadata: Some(metadata),
        })
    }
}

fn error(code: EvaluationErrorCode, message: impl ToString) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message.to_string()),
    }
}

fn code_of(code: ErrorCode, message: &str) -> EvaluationErrorCode {
    match code {
        ErrorCode::ProviderNotReady => EvaluationErrorCode::ProviderNotReady,
        ErrorCode::FlagNotFound => EvaluationErrorCode::FlagNotFound,
        ErrorCode::ParseError => EvaluationErrorCode::ParseError,
        ErrorCode::TypeMismatch => EvaluationErrorCode::TypeMismatch,
        ErrorCode::TargetingKeyMissing => EvaluationErrorCode::TargetingKeyMissing,
        ErrorCode::InvalidContext => EvaluationErrorCode::InvalidContext,
        ErrorCode::ProviderFatal | ErrorCode::General => {
            EvaluationErrorCode::General(message.to_owned())
        }
    }
}

fn reason_of(reason: Reason) -> EvaluationReason {
    match reason {
        Reason::Static => EvaluationReason::Static,
        Reason::Default => EvaluationReason::Default,
        Reason::TargetingMatch => EvaluationReason::TargetingMatch,
        Reason::Split => EvaluationReason::Split,
        Reason::Cached => EvaluationReason::Cached,
        Reason::Disabled => EvaluationReason::Disabled,
        Reason::Error => EvaluationReason::Error,
        other => EvaluationReason::Other(other.as_str().to_owned()),
    }
}

/// The flag's own metadata (`metadata:` in its rule file), then ruleset, version and sha256,
/// which win.
fn metadata(d: &Details) -> FlagMetadata {
    let mut m = FlagMetadata::default();
    for (k, v) in &d.resolution.metadata {
        m = match v {
            Value::Bool(b) => m.with_value(k.clone(), *b),
            Value::Int(n) => m.with_value(k.clone(), *n),
            Value::Float(f) => m.with_value(k.clone(), *f),
            Value::String(s) => m.with_value(k.clone(), s.clone()),
            _ => m,
        };
    }
    m.with_value("ruleset", d.ruleset.clone())
        .with_value("version", i64::try_from(d.version).unwrap_or(i64::MAX))
        .with_value("sha256", d.sha256.clone())
}

/// OpenFeature's context as a flagforge context: `targetingKey` as is (the module maps it),
/// date-times as RFC 3339 strings, structures given as `StructValue` or `serde_json::Value`.
fn to_context(ctx: &EvaluationContext) -> Context {
    let mut out = Context::new();
    if let Some(k) = &ctx.targeting_key {
        out.insert(
            flagforge_protocol::TARGETING_KEY.to_owned(),
            Value::from(k.as_str()),
        );
    }
    for (k, v) in &ctx.custom_fields {
        let value = match v {
            EvaluationContextFieldValue::Bool(b) => Some(Value::Bool(*b)),
            EvaluationContextFieldValue::Int(i) => Some(Value::Int(*i)),
            EvaluationContextFieldValue::Float(f) => Value::number(*f),
            EvaluationContextFieldValue::String(s) => Some(Value::from(s.as_str())),
            EvaluationContextFieldValue::DateTime(t) => {
                let nanos = i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX);
                Some(Value::String(flagforge_protocol::time::format_timestamp(
                    nanos,
                )))
            }
            EvaluationContextFieldValue::Struct(any) => {
                if let Some(s) = any.downcast_ref::<StructValue>() {
                    Some(from_of(&OfValue::Struct(s.clone())))
                } else {
                    any.downcast_ref::<serde_json::Value>()
                        .and_then(|j| Value::from_json(j).ok())
                }
            }
        };
        if let Some(v) = value {
            out.insert(k.clone(), v);
        }
    }
    out
}

fn from_of(v: &OfValue) -> Value {
    match v {
        OfValue::Bool(b) => Value::Bool(*b),
        OfValue::Int(i) => Value::Int(*i),
        OfValue::Float(f) => Value::number(*f).unwrap_or(Value::Null),
        OfValue::String(s) => Value::from(s.as_str()),
        OfValue::Array(items) => Value::List(items.iter().map(from_of).collect()),
        OfValue::Struct(s) => Value::Map(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_of(v)))
                .collect(),
        ),
    }
}

fn to_of(v: Value) -> Option<OfValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => OfValue::Bool(b),
        Value::Int(i) => OfValue::Int(i),
        Value::Float(f) => OfValue::Float(f),
        Value::String(s) => OfValue::String(s),
        Value::List(items) => OfValue::Array(items.into_iter().filter_map(to_of).collect()),
        Value::Map(m) => OfValue::Struct(StructValue {
            fields: m
                .into_iter()
                .filter_map(|(k, v)| Some((k, to_of(v)?)))
                .collect::<HashMap<_, _>>(),
        }),
    })
}

#[async_trait]
impl FeatureProvider for FlagforgeProvider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        let mut events = self.flags.events();
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        while !matches!(self.flags.status(), Status::Ready | Status::Stale) {
            // Woken by any event, and at least every 50 ms (readiness from snapshots is
            // immediate; from Kafka it comes with the first verified record).
            let wait = tokio::time::timeout(Duration::from_millis(50), events.recv());
            if tokio::time::Instant::now() >= deadline {
                log::warn!("flagforge: not ready after {:?}", self.ready_timeout);
                return;
            }
            let _ = wait.await;
        }
    }

    fn status(&self) -> ProviderStatus {
        match self.flags.status() {
            Status::NotReady => ProviderStatus::NotReady,
            Status::Ready => ProviderStatus::Ready,
            Status::Stale => ProviderStatus::STALE,
            Status::Error => ProviderStatus::Error,
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(flag_key, ctx, &[ValueType::Boolean], |v| match v {
            Value::Bool(b) => Some(b),
            _ => None,
        })
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(flag_key, ctx, &[ValueType::Integer], |v| match v {
            Value::Int(i) => Some(i),
            _ => None,
        })
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        // Any number reads as a float (an integer flag's 3 is 3.0).
        self.resolve(
            flag_key,
            ctx,
            &[ValueType::Float, ValueType::Integer],
            |v| match v {
                Value::Int(i) => Some(i as f64),
                Value::Float(f) => Some(f),
                _ => None,
            },
        )
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(flag_key, ctx, &[ValueType::String], |v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(flag_key, ctx, &[ValueType::Object], |v| match to_of(v) {
            Some(OfValue::Struct(s)) => Some(s),
            _ => None,
        })
    }
}
