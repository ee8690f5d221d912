//! Decide once per workflow. An edge service or orchestrator evaluates the flags a workflow
//! depends on once ([`decide`]), signs the answers into a [`DecisionContext`] (values,
//! variants, reasons, the module hash and version per ruleset, decision time, correlation id,
//! expiry, signer key id) and carries it with the work as one header
//! ([`HEADER`], same bytes in HTTP and Kafka). Downstream services verify it
//! ([`DecisionContext::verify`]) and prefer the carried answers ([`Lookup`]): nobody re-decides
//! mid-flight, and every transaction records which rules decided it.
//!
//! **Signatures are Ed25519**, with the signer's key id in the context so keys can rotate
//! (verifiers trust several keys at once). Ed25519 rather than HMAC-SHA256 because with HMAC
//! every verifying service holds the secret and so can mint decisions; with Ed25519 only the
//! deciders hold signing keys and the many downstream services hold public keys. Verification
//! costs more (see BENCHMARKS.md), once per incoming request.
//!
//! **Header format** (`flagforge-decision`): base64url without padding of the MessagePack array
//! `[1, key_id, payload, signature]`; `payload` is the MessagePack array
//! `[correlation_id, decided_at_ms, expires_at_ms, [[ruleset, version|nil, sha256(32 bytes)]…],
//! [[flag, ruleset_index, variant|nil, value, reason_code]…]]`, and the signature covers
//! `"flagforge-decision-v1\0" ++ key_id ++ "\0" ++ payload` exactly as received (nothing is
//! re-encoded before checking).

#[cfg(feature = "host")]
mod carry;
#[cfg(feature = "host")]
mod lookup;

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use flagforge_distribution::{KeyPair, TrustedKeys};
use flagforge_protocol::time::format_timestamp;
#[cfg(feature = "host")]
use flagforge_protocol::Context;
use flagforge_protocol::{Reason, Value};
use serde::{Deserialize, Serialize};
#[cfg(feature = "host")]
use wasm_host::LoadedModule;

#[cfg(feature = "host")]
pub use carry::{attach_http, attach_kafka, read_http, read_kafka};
#[cfg(feature = "host")]
pub use lookup::{Lookup, Mismatches, Resolved, Source};

/// The HTTP header and Kafka message header carrying a decision context.
pub const HEADER: &str = "flagforge-decision";

/// Longest header value accepted (bytes of base64url); longer ones are refused unread.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

const FORMAT: u8 = 1;
const DOMAIN: &[u8] = b"flagforge-decision-v1\0";

/// Why a carried decision context was refused. Each case has its own [`DecisionError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// Not base64url, not the expected MessagePack, or too large.
    #[error("malformed decision context: {0}")]
    Malformed(String),
    /// A format this version does not read.
    #[error("decision context format {0} is not supported (this build reads format 1)")]
    UnsupportedFormat(u64),
    /// Signed by a key this service does not trust.
    #[error("decision context signed by unknown key `{0}`")]
    UnknownKey(String),
    /// The signature does not match (forged or altered).
    #[error("decision context signature does not verify (forged or altered)")]
    BadSignature,
    /// Past its expiry.
    #[error("decision context expired at {expired_at} (now {now})")]
    Expired {
        /// When it expired (RFC 3339).
        expired_at: String,
        /// The verifier's clock (RFC 3339).
        now: String,
    },
    /// A flag asked to be decided is not in the module.
    #[error("flag `{0}` is not defined in the module")]
    UnknownFlag(String),
    /// The context is bound to a subject (e.g. a customer) other than the request's: a
    /// decision replayed for someone else.
    #[error("decision context is bound to another `{0}` than this request's")]
    SubjectMismatch(String),
}

impl DecisionError {
    /// A short stable label (metrics, logs).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            DecisionError::Malformed(_) => "malformed",
            DecisionError::UnsupportedFormat(_) => "unsupported_format",
            DecisionError::UnknownKey(_) => "unknown_key",
            DecisionError::BadSignature => "bad_signature",
            DecisionError::Expired { .. } => "expired",
            DecisionError::UnknownFlag(_) => "unknown_flag",
            DecisionError::SubjectMismatch(_) => "subject_mismatch",
        }
    }
}

/// The module (ruleset) a decision came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetRef {
    /// Ruleset name.
    pub name: String,
    /// Envelope version, when the decider knew it.
    pub version: Option<u64>,
    /// Module sha256, lowercase hex.
    pub sha256: String,
}

/// One carried answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Carried {
    /// Index into [`DecisionContext::rulesets`].
    pub ruleset: usize,
    /// The served value.
    pub value: Value,
    /// The served variant.
    pub variant: Option<String>,
    /// Why, as decided at the edge.
    pub reason: Reason,
}

/// Who a decision context was decided for: one attribute of the context it was decided with
/// (the targeting key, e.g. `customer_id`) and its value. A bound context is honoured only for
/// requests whose context has the same value: it cannot be replayed for another customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The attribute.
    pub attribute: String,
    /// Its value (a string as is; an integer as base-10 text).
    pub value: String,
}

impl Subject {
    /// The subject `attribute` names in `context`, if it holds a string or an integer.
    #[must_use]
    pub fn of(attribute: &str, context: &flagforge_protocol::Context) -> Option<Subject> {
        let value = match context.get(attribute)? {
            Value::String(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => return None,
        };
        Some(Subject {
            attribute: attribute.to_owned(),
            value,
        })
    }
}

/// Decisions made once for a workflow, as carried downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionContext {
    /// The workflow's correlation id (e.g. the order id).
    pub correlation_id: String,
    /// When the flags were decided (Unix milliseconds).
    pub decided_at_ms: i64,
    /// After this instant (Unix milliseconds) the context is refused.
    pub expires_at_ms: i64,
    /// Signer key id (set by [`DecisionContext::encode`] and [`DecisionContext::verify`]).
    pub key_id: String,
    /// The modules that decided.
    pub rulesets: Vec<RulesetRef>,
    /// Flag key → answer.
    pub decisions: BTreeMap<String, Carried>,
    /// The subject it is bound to, if any (signed with the rest).
    pub subject: Option<Subject>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    cid: String,
    at: i64,
    exp: i64,
    rulesets: Vec<(String, Option<u64>, serde_bytes::ByteBuf)>,
    decisions: Vec<(String, u32, Option<String>, Value, u8)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct Wire(u64, String, serde_bytes::ByteBuf, serde_bytes::ByteBuf);

fn signed_message(key_id: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + key_id.len() + 1 + payload.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(key_id.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

fn hex_to_bytes(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn bytes_to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 3339 of Unix milliseconds.
#[must_use]
pub fn rfc3339_ms(ms: i64) -> String {
    format_timestamp(ms.saturating_mul(1_000_000))
}

impl DecisionContext {
    /// Signs with `key` and encodes as the header value (base64url).
    #[must_use]
    pub fn encode(&self, key: &KeyPair) -> String {
        let public = key.public();
        let key_id = public.id().to_owned();
        let payload = Payload {
            cid: self.correlation_id.clone(),
            at: self.decided_at_ms,
            exp: self.expires_at_ms,
            rulesets: self
                .rulesets
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        r.version,
                        serde_bytes::ByteBuf::from(hex_to_bytes(&r.sha256)),
                    )
                })
                .collect(),
            decisions: self
                .decisions
                .iter()
                .map(|(k, c)| {
                    (
                        k.clone(),
                        c.ruleset as u32,
                        c.variant.clone(),
                        c.value.clone(),
                        c.reason.code(),
                    )
                })
                .collect(),
            sub: self
                .subject
                .as_ref()
                .map(|s| (s.attribute.clone(), s.value.clone())),
        };
        // Encoding plain data (strings, integers, canonical values) cannot fail.
        let payload = rmp_serde::to_vec(&payload).unwrap_or_default();
        let signature = key.sign(&signed_message(&key_id, &payload));
        let wire = Wire(
            u64::from(FORMAT),
            key_id,
            serde_bytes::ByteBuf::from(payload),
            serde_bytes::ByteBuf::from(signature),
        );
        URL_SAFE_NO_PAD.encode(rmp_serde::to_vec(&wire).unwrap_or_default())
    }

    /// Decodes and verifies a header value: format, trusted signer, signature, expiry (against
    /// `now_ms`). Nothing in it is used unless all pass.
    pub fn verify(
        header: &str,
        trusted: &TrustedKeys,
        now_ms: i64,
    ) -> Result<DecisionContext, DecisionError> {
        let header = header.trim();
        if header.len() > MAX_HEADER_BYTES {
            return Err(DecisionError::Malformed(format!(
                "{} bytes; the limit is {MAX_HEADER_BYTES}",
                header.len()
            )));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|e| DecisionError::Malformed(format!("not base64url: {e}")))?;
        let Wire(format, key_id, payload, signature) = rmp_serde::from_slice(&raw)
            .map_err(|e| DecisionError::Malformed(format!("not a decision context: {e}")))?;
        if format != u64::from(FORMAT) {
            return Err(DecisionError::UnsupportedFormat(format));
        }
        let key = trusted
            .get(&key_id)
            .ok_or_else(|| DecisionError::UnknownKey(key_id.clone()))?;
        if !key.verify(&signed_message(&key_id, &payload), &signature) {
            return Err(DecisionError::BadSignature);
        }
        let p: Payload = rmp_serde::from_slice(&payload)
            .map_err(|e| DecisionError::Malformed(format!("signed payload unreadable: {e}")))?;
        if now_ms > p.exp {
            return Err(DecisionError::Expired {
                expired_at: rfc3339_ms(p.exp),
                now: rfc3339_ms(now_ms),
            });
        }
        let n = p.rulesets.len();
        let mut decisions = BTreeMap::new();
        for (flag, ruleset, variant, value, reason) in p.decisions {
            let ruleset = ruleset as usize;
            if ruleset >= n {
                return Err(DecisionError::Malformed(format!(
                    "flag `{flag}` names ruleset #{ruleset} of {n}"
                )));
            }
            let reason = Reason::from_code(reason)
                .ok_or_else(|| DecisionError::Malformed(format!("reason code {reason}")))?;
            decisions.insert(
                flag,
                Carried {
                    ruleset,
                    value,
                    variant,
                    reason,
                },
            );
        }
        Ok(DecisionContext {
            correlation_id: p.cid,
            decided_at_ms: p.at,
            expires_at_ms: p.exp,
            key_id,
            rulesets: p
                .rulesets
                .into_iter()
                .map(|(name, version, sha)| RulesetRef {
                    name,
                    version,
                    sha256: bytes_to_hex(&sha),
                })
                .collect(),
            decisions,
            subject: p.sub.map(|(attribute, value)| Subject { attribute, value }),
        })
    }

    /// The context as JSON-friendly data (for `flagforge verify-decision` and logs).
    #[must_use]
    pub fn describe(&self) -> Value {
        let s = |x: &str| Value::String(x.to_owned());
        let mut m = BTreeMap::new();
        m.insert("correlation_id".into(), s(&self.correlation_id));
        m.insert("decided_at".into(), s(&rfc3339_ms(self.decided_at_ms)));
        m.insert("expires_at".into(), s(&rfc3339_ms(self.expires_at_ms)));
        m.insert("key_id".into(), s(&self.key_id));
        m.insert(
            "rulesets".into(),
            Value::List(
                self.rulesets
                    .iter()
                    .map(|r| {
                        let mut o = BTreeMap::new();
                        o.insert("name".into(), s(&r.name));
                        o.insert(
                            "version".into(),
                            r.version.map_or(Value::Null, |v| {
                                Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
                            }),
                        );
                        o.insert("sha256".into(), s(&r.sha256));
                        Value::Map(o)
                    })
                    .collect(),
            ),
        );
        let mut d = BTreeMap::new();
        for (flag, c) in &self.decisions {
            let mut o = BTreeMap::new();
            o.insert("value".into(), c.value.clone());
            if let Some(v) = &c.variant {
                o.insert("variant".into(), s(v));
            }
            o.insert("reason".into(), s(c.reason.as_str()));
            if let Some(r) = self.rulesets.get(c.ruleset) {
                o.insert("ruleset".into(), s(&r.name));
            }
            d.insert(flag.clone(), Value::Map(o));
        }
        m.insert("decisions".into(), Value::Map(d));
        if let Some(subject) = &self.subject {
            let mut o = BTreeMap::new();
            o.insert("attribute".into(), s(&subject.attribute));
            o.insert("value".into(), s(&subject.value));
            m.insert("subject".into(), Value::Map(o));
        }
        Value::Map(m)
    }
}

/// Evaluates `flags` once on `module` and returns the (unsigned) decision context; sign and
/// encode it with [`DecisionContext::encode`]. `version` is the module's envelope version when
/// known (hosts know it; a module read from a file does not).
#[cfg(feature = "host")]
pub fn decide(
    module: &LoadedModule,
    version: Option<u64>,
    flags: &[&str],
    context: &Context,
    correlation_id: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<DecisionContext, DecisionError> {
    let mut decisions = BTreeMap::new();
    for flag in flags {
        if module.manifest().flag(flag).is_none() {
            return Err(DecisionError::UnknownFlag((*flag).to_owned()));
        }
        let r = module.evaluate(flag, context, false);
        decisions.insert(
            (*flag).to_owned(),
            Carried {
                ruleset: 0,
                value: r.value,
                variant: r.variant,
                reason: r.reason,
            },
        );
    }
    Ok(DecisionContext {
        correlation_id: correlation_id.to_owned(),
        decided_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        key_id: String::new(),
        rulesets: vec![RulesetRef {
            name: module.manifest().ruleset.clone(),
            version,
            sha256: module.sha256_hex(),
        }],
        decisions,
        subject: None,
    })
}

/// Milliseconds since the Unix epoch, from the system clock.
#[cfg(feature = "host")]
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(all(test, feature = "host"))]
mod tests;
