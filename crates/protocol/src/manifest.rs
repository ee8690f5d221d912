//! The manifest a module reports about itself: ruleset, schema and per-flag metadata.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Resolution, Value};

/// What a flag is for. Drives required metadata and failure policy defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagKind {
    /// Gradual release of a feature.
    Release,
    /// A/B/n experiment.
    Experiment,
    /// Operational switch (kill switch, routing).
    Ops,
    /// Migration state machine.
    Migration,
    /// Business policy (pricing, tax, entitlement).
    Policy,
}

impl FlagKind {
    /// Every kind, in documentation order.
    pub const ALL: [FlagKind; 5] = [
        FlagKind::Release,
        FlagKind::Experiment,
        FlagKind::Ops,
        FlagKind::Migration,
        FlagKind::Policy,
    ];

    /// The spelling used in rule files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::Release => "release",
            FlagKind::Experiment => "experiment",
            FlagKind::Ops => "ops",
            FlagKind::Migration => "migration",
            FlagKind::Policy => "policy",
        }
    }

    /// Whether flags of this kind must declare `expires`.
    #[must_use]
    pub fn requires_expiry(self) -> bool {
        !matches!(self, FlagKind::Ops | FlagKind::Policy)
    }
}

/// How fresh a flag must be on a host: the longest a host may go without confirming contact
/// with the broker before it reports the flag's ruleset as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Propagation {
    /// At most 1 second (default for ops flags: kill switches).
    Immediate,
    /// At most 10 seconds (default for migration flags).
    NearRealTime,
    /// At most 5 minutes (default for release, experiment and policy flags).
    Eventual,
}

impl Propagation {
    /// Every class, strictest first.
    pub const ALL: [Propagation; 3] = [
        Propagation::Immediate,
        Propagation::NearRealTime,
        Propagation::Eventual,
    ];

    /// The spelling used in rule files.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Immediate => "immediate",
            Propagation::NearRealTime => "near-real-time",
            Propagation::Eventual => "eventual",
        }
    }

    /// Longest acceptable time since the last confirmed broker contact, in milliseconds.
    #[must_use]
    pub fn max_staleness_ms(self) -> u64 {
        match self {
            Propagation::Immediate => 1_000,
            Propagation::NearRealTime => 10_000,
            Propagation::Eventual => 300_000,
        }
    }

    /// The default class of a flag kind.
    #[must_use]
    pub fn default_for(kind: FlagKind) -> Propagation {
        match kind {
            FlagKind::Ops => Propagation::Immediate,
            FlagKind::Migration => Propagation::NearRealTime,
            _ => Propagation::Eventual,
        }
    }
}

/// A declared context attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrDecl {
    /// Attribute name.
    pub name: String,
    /// Declared type: `string`, `int`, `number`, `bool`, `semver`, `timestamp`, `list<T>`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// A variant as reported by the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantInfo {
    /// Variant name.
    pub name: String,
    /// Variant value.
    pub value: Value,
}

/// Optional lifecycle metadata carried from the rule file. (Every field is always encoded:
/// the compiled rules use a format without field names, where skipped fields cannot work.)
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lifecycle {
    /// When the flag can be removed.
    pub retirement: Option<String>,
    /// Services that read the flag.
    pub dependents: Vec<String>,
    /// Link to documentation.
    pub docs: Option<String>,
}

/// Everything a host may know about a flag without evaluating it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagInfo {
    /// Flag key.
    pub key: String,
    /// Flag kind.
    pub kind: FlagKind,
    /// Owning team.
    pub owner: String,
    /// What the flag does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Expiry date (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Variants in declaration order.
    pub variants: Vec<VariantInfo>,
    /// Default variant name.
    pub default: String,
    /// Variant served when evaluation fails.
    pub on_error: String,
    /// Declared states of a migration flag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    /// Flags that must serve given variants first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prerequisites: Vec<String>,
    /// Context attributes the flag reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    /// True when the flag has no rules, schedule or prerequisites: always its default.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// How fresh the flag must be on a host.
    pub propagation: Propagation,
    /// Audiences whose builds may hold this flag (e.g. `browser`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// Lifecycle metadata.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// The flag's static metadata (`metadata:` in the rule file): strings, numbers, booleans.
    /// A map on the wire, in file order; a `Vec` here because a map type costs the module
    /// kilobytes of code it would only use to build this.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "pairs_as_map")]
    pub metadata: Vec<(String, Value)>,
    /// Number variants are floats (written `50.0` in the rule file): hosts present an
    /// integral value as a float (`50.0`), so typed clients (`getFloatValue`) accept it.
    #[serde(default)]
    pub float: bool,
}

/// The type of a flag's values, in OpenFeature's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// `true`/`false`.
    Boolean,
    /// Text.
    String,
    /// Whole numbers.
    Integer,
    /// Numbers with a fraction (or written as floats).
    Float,
    /// JSON objects and lists.
    Object,
}

impl ValueType {
    /// The spelling in OpenFeature's flag types.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Object => "object",
        }
    }
}

impl FlagInfo {
    /// The type of this flag's values (every variant has one type).
    #[must_use]
    pub fn value_type(&self) -> ValueType {
        let any_float = self
            .variants
            .iter()
            .any(|v| matches!(v.value, Value::Float(_)));
        match self.variants.first().map(|v| &v.value) {
            Some(Value::Bool(_)) => ValueType::Boolean,
            Some(Value::String(_)) => ValueType::String,
            Some(Value::Int(_) | Value::Float(_)) if self.float || any_float => ValueType::Float,
            Some(Value::Int(_) | Value::Float(_)) => ValueType::Integer,
            _ => ValueType::Object,
        }
    }

    /// The value of a named variant.
    #[must_use]
    pub fn variant_value(&self, name: &str) -> Option<&Value> {
        self.variants
            .iter()
            .find(|v| v.name == name)
            .map(|v| &v.value)
    }

    /// The result a host serves when it cannot get an answer from the module
    /// (trap, exhausted budget, unusable input): the `on_error` variant with reason `ERROR`.
    #[must_use]
    pub fn fallback(&self, code: ErrorCode, message: impl Into<String>) -> Resolution {
        let value = self
            .variant_value(&self.on_error)
            .cloned()
            .unwrap_or_default();
        Resolution {
            metadata: self.metadata.clone(),
            ..Resolution::error(&self.key, value, Some(self.on_error.clone()), code, message)
        }
    }
}

/// What a module says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// ABI version implemented.
    pub abi_version: u32,
    /// Ruleset name.
    pub ruleset: String,
    /// Version of the compiler that built the module.
    pub compiler: String,
    /// Declared context schema.
    pub context: Vec<AttrDecl>,
    /// Flags in declaration order.
    pub flags: Vec<FlagInfo>,
    /// The attribute OpenFeature's `targetingKey` stands for (see [`crate::TARGETING_KEY`]).
    #[serde(default = "default_targeting_key")]
    pub targeting_key: String,
}

fn default_targeting_key() -> String {
    crate::TARGETING_KEY.to_owned()
}

impl Manifest {
    /// Per flag, every context attribute its answer can depend on: its own `reads` and,
    /// transitively, its prerequisites'. Hosts send a module only these (see [`pick`]).
    #[must_use]
    pub fn answer_reads(&self) -> std::collections::HashMap<String, Vec<String>> {
        let by_key: std::collections::HashMap<&str, &FlagInfo> =
            self.flags.iter().map(|f| (f.key.as_str(), f)).collect();
        self.flags
            .iter()
            .map(|f| {
                let mut names = std::collections::BTreeSet::new();
                let mut seen = std::collections::BTreeSet::new();
                let mut stack = vec![f.key.as_str()];
                while let Some(k) = stack.pop() {
                    if !seen.insert(k) {
                        continue;
                    }
                    if let Some(info) = by_key.get(k) {
                        names.extend(info.reads.iter().cloned());
                        stack.extend(info.prerequisites.iter().map(String::as_str));
                    }
                }
                (f.key.clone(), names.into_iter().collect())
            })
            .collect()
    }

    /// The answer a host serves for `key` when the module gave none: the flag's `on_error`
    /// variant with `code`, or `FLAG_NOT_FOUND` for a flag this ruleset does not define.
    #[must_use]
    pub fn fallback(&self, key: &str, code: ErrorCode, message: impl Into<String>) -> Resolution {
        match self.flag(key) {
            Some(flag) => flag.fallback(code, message),
            None => Resolution::error(
                key,
                Value::Null,
                None,
                ErrorCode::FlagNotFound,
                format!("flag `{key}` is not defined in ruleset `{}`", self.ruleset),
            ),
        }
    }

    /// Every attribute any flag reads (what an all-flags evaluation needs), sorted.
    #[must_use]
    pub fn all_reads(&self) -> Vec<String> {
        let all: std::collections::BTreeSet<&String> =
            self.flags.iter().flat_map(|f| f.reads.iter()).collect();
        all.into_iter().cloned().collect()
    }

    /// The strictest propagation class of any flag (`None` for a ruleset without flags).
    #[must_use]
    pub fn strictest_propagation(&self) -> Option<Propagation> {
        self.flags
            .iter()
            .map(|f| f.propagation)
            .min_by_key(|p| p.max_staleness_ms())
    }

    /// Adds `now` to a context when the schema declares `now: timestamp` and the context has
    /// none: hosts supply the time (modules read no clock). `now` is only called when needed.
    pub fn fill_now(&self, ctx: &mut crate::Context, now: impl FnOnce() -> String) {
        let declared = self
            .context
            .iter()
            .any(|a| a.name == "now" && a.ty == "timestamp");
        if declared && !ctx.contains_key("now") {
            ctx.insert("now".into(), Value::String(now()));
        }
    }

    /// The result a host serves for flag number `index` from the module's record: the
    /// variant's name and value from this manifest, the rest from the record.
    pub fn expand(
        &self,
        index: u32,
        record: &crate::abi::Record<'_>,
    ) -> Result<Resolution, ExpandError> {
        let flag = self
            .flags
            .get(index as usize)
            .ok_or(ExpandError::Flag(index))?;
        let served = match record.variant {
            None => None,
            Some(v) => Some(
                flag.variants
                    .get(usize::from(v))
                    .ok_or(ExpandError::Variant(v))?,
            ),
        };
        let explain = if record.explain.is_empty() {
            None
        } else {
            Some(
                crate::decode::<crate::Explanation>(record.explain)
                    .map_err(|e| ExpandError::Explain(e.to_string()))?,
            )
        };
        Ok(Resolution {
            key: flag.key.clone(),
            value: served.map_or(Value::Null, |v| v.value.clone()),
            variant: served.map(|v| v.name.clone()),
            reason: record.reason,
            error_code: record.error,
            error_message: record.error.map(|_| record.message.to_owned()),
            explain,
            metadata: flag.metadata.clone(),
        })
    }

    /// The results of an all-flags call: one record per flag, in order, and nothing after.
    pub fn expand_all(&self, mut records: &[u8]) -> Result<Vec<Resolution>, ExpandError> {
        let mut out = Vec::with_capacity(self.flags.len());
        for i in 0..self.flags.len() {
            let (record, rest) = crate::abi::Record::read(records)?;
            out.push(self.expand(i as u32, &record)?);
            records = rest;
        }
        if records.is_empty() {
            Ok(out)
        } else {
            Err(ExpandError::Trailing)
        }
    }

    /// The result of a one-flag call: exactly one record.
    pub fn expand_one(&self, index: u32, record: &[u8]) -> Result<Resolution, ExpandError> {
        match crate::abi::Record::read(record)? {
            (r, []) => self.expand(index, &r),
            _ => Err(ExpandError::Trailing),
        }
    }

    /// Looks a flag up by key.
    #[must_use]
    pub fn flag(&self, key: &str) -> Option<&FlagInfo> {
        self.flags.iter().find(|f| f.key == key)
    }
}

/// Why a module's result record cannot be expanded into a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The record bytes are malformed.
    #[error(transparent)]
    Record(#[from] crate::abi::RecordError),
    /// The record names a flag the manifest does not have.
    #[error("result for flag number {0}, which the manifest does not have")]
    Flag(u32),
    /// The record names a variant the flag does not have.
    #[error("result serves variant number {0}, which the flag does not have")]
    Variant(u16),
    /// The explanation does not decode.
    #[error("result explanation does not decode: {0}")]
    Explain(String),
    /// Bytes follow the last record.
    #[error("bytes follow the last result record")]
    Trailing,
}

/// What `ff_manifest` returns: the manifest, or why the module cannot serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestReply {
    /// The module is usable.
    Ok(Manifest),
    /// The module's embedded rules could not be loaded.
    Error(String),
}

/// `Vec<(String, Value)>` as a map on the wire, keeping its order.
pub(crate) mod pairs_as_map {
    use core::fmt;

    use serde::de::{MapAccess, Visitor};
    use serde::{Deserializer, Serializer};

    use crate::Value;

    pub fn serialize<S: Serializer>(v: &[(String, Value)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Value)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, Value)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pairs)
    }
}
