//! Evaluation results in OpenFeature's vocabulary (value, variant, reason, error code).

use serde::{Deserialize, Serialize};

use crate::Value;

/// Why a value was served (OpenFeature resolution reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag has no rules: its default is the only possible answer.
    Static,
    /// Rules exist but none matched, or a prerequisite was not met: the default was served.
    Default,
    /// A rule's condition matched and it served a variant.
    TargetingMatch,
    /// A rule's weighted rollout picked the variant.
    Split,
    /// The flag is disabled or outside its schedule: the default was served.
    Disabled,
    /// Served from a host cache.
    Cached,
    /// Served from a module older than the freshness the flag asks for.
    Stale,
    /// Evaluation failed: the flag's `on_error` variant (or the call-site default) was served.
    Error,
}

impl Reason {
    /// Every reason, in the order of its ABI code (`ABI.md`, "Result records").
    pub const ALL: [Reason; 8] = [
        Reason::Static,
        Reason::Default,
        Reason::TargetingMatch,
        Reason::Split,
        Reason::Disabled,
        Reason::Cached,
        Reason::Stale,
        Reason::Error,
    ];

    /// The reason's code in a result record: its position in [`Reason::ALL`].
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reason with record code `code`.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.get(usize::from(code)).copied()
    }

    /// The OpenFeature spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::Default => "DEFAULT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Cached => "CACHED",
            Reason::Stale => "STALE",
            Reason::Error => "ERROR",
        }
    }
}

/// OpenFeature error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No module is loaded yet.
    ProviderNotReady,
    /// The ruleset has no flag with that key.
    FlagNotFound,
    /// The input could not be decoded.
    ParseError,
    /// A context attribute does not have its declared type.
    TypeMismatch,
    /// The bucketing key a rule needs is missing.
    TargetingKeyMissing,
    /// The context is unusable (too large, too deep, missing `now` for a schedule).
    InvalidContext,
    /// The module cannot serve at all.
    ProviderFatal,
    /// Anything else (a trap, an exhausted budget).
    General,
}

impl ErrorCode {
    /// Every code, in the order of its ABI code (`ABI.md`, "Result records").
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::ProviderNotReady,
        ErrorCode::FlagNotFound,
        ErrorCode::ParseError,
        ErrorCode::TypeMismatch,
        ErrorCode::TargetingKeyMissing,
        ErrorCode::InvalidContext,
        ErrorCode::ProviderFatal,
        ErrorCode::General,
    ];

    /// The code in a result record: 1 + its position in [`ErrorCode::ALL`] (0 is "none").
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8 + 1
    }

    /// The error with record code `code` (`None` for 0 or an unknown code).
    #[must_use]
    pub fn from_code(code: u8) -> Option<ErrorCode> {
        ErrorCode::ALL
            .get(usize::from(code.checked_sub(1)?))
            .copied()
    }

    /// The OpenFeature spelling (`FLAG_NOT_FOUND`), as on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ProviderNotReady => "PROVIDER_NOT_READY",
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::ProviderFatal => "PROVIDER_FATAL",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The answer for one flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The flag key.
    pub key: String,
    /// The served value (`null` when there is nothing to serve, e.g. an unknown flag).
    pub value: Value,
    /// The served variant's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Why this value.
    pub reason: Reason,
    /// Set when `reason` is `ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// Human-readable detail for `error_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Present when the caller asked for an explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
    /// The flag's static metadata (`metadata:` in its rule file), OpenFeature's flag
    /// metadata: on every answer for a flag the ruleset defines, whatever the reason.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::manifest::pairs_as_map"
    )]
    pub metadata: Vec<(String, Value)>,
}

impl Resolution {
    /// A failed resolution serving `value`/`variant` (the flag's `on_error`, or nothing).
    #[must_use]
    pub fn error(
        key: &str,
        value: Value,
        variant: Option<String>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Resolution {
        Resolution {
            key: key.to_owned(),
            value,
            variant,
            reason: Reason::Error,
            error_code: Some(code),
            error_message: Some(message.into()),
            explain: None,
            metadata: Vec::new(),
        }
    }
}

/// How a result was reached, step by step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// Index (0-based, in source order) of the rule that decided, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    /// Every check made, in order.
    pub steps: Vec<Step>,
}

/// One check made while evaluating a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// What was checked: `schedule`, `prerequisite X`, `rule 2`.
    pub check: String,
    /// The rule's source (`file:line` and condition text), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The outcome: `matched`, `not matched`, `missing attribute`, `bucket 1234 of 10000`…
    pub outcome: String,
}

#[cfg(feature = "json")]
impl Resolution {
    /// The result as OpenFeature clients see it in JSON, the one rendering every JSON surface
    /// uses (`flagforge eval`, OFREP, the providers): camelCase `errorCode`/`errorMessage`,
    /// and the value typed as its flag (`float`: [`crate::FlagInfo::float`], so `50.0` stays
    /// a float).
    #[must_use]
    pub fn to_json(&self, float: bool) -> serde_json::Value {
        let mut o = serde_json::Map::new();
        o.insert("key".into(), self.key.clone().into());
        o.insert("value".into(), self.value.to_json_as(float));
        if let Some(v) = &self.variant {
            o.insert("variant".into(), v.clone().into());
        }
        o.insert("reason".into(), self.reason.as_str().into());
        if let Some(code) = self.error_code {
            o.insert("errorCode".into(), code.as_str().into());
        }
        if let Some(m) = &self.error_message {
            o.insert("errorMessage".into(), m.clone().into());
        }
        if let Some(e) = &self.explain {
            o.insert(
                "explain".into(),
                serde_json::to_value(e).unwrap_or(serde_json::Value::Null),
            );
        }
        if !self.metadata.is_empty() {
            let meta: serde_json::Map<String, serde_json::Value> = self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect();
            o.insert("metadata".into(), meta.into());
        }
        serde_json::Value::Object(o)
    }
}
