//! The signed envelope a module travels in (Kafka value, snapshot file).
//!
//! Encoding: MessagePack with field names. The signature covers
//! `"flagforge envelope v1\0"` followed by the MessagePack of every field except the module
//! bytes and the signatures; the module is covered through its sha256, which verification
//! recomputes. The envelope carries a list of signatures: the author's is the one with role
//! `author` and the envelope's `author` key id; approvals (role `approver`) sign a statement
//! defined by flagforge-governance over the module hash, `previous` and `changes`.
//!
//! `previous` (the sha256 of the module this version was diffed against) and `changes` (the
//! semantic diff, encoded by flagforge-governance) are signed when present and left out of
//! the encoding and the signed bytes when absent, so envelopes without them verify as before.
//! So is `epoch`: versions are ordered by `(epoch, version)`, and a publisher that finds no
//! verified earlier version of a ruleset on the topic (a first publish, or a broker that lost
//! its data) starts a new epoch (its clock, in milliseconds) at version 1, so hosts still
//! serving an older epoch's higher version accept it (see `order`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{KeyPair, TrustedKeys};

/// Version of the envelope encoding.
pub const ENVELOPE_FORMAT: u32 = 1;
/// Largest record (an envelope's bytes) any reader decodes: above the publisher's 900 KiB
/// envelope limit, below what a host would ever load.
pub const MAX_RECORD_BYTES: usize = 2_000_000;
const SIGNING_DOMAIN: &[u8] = b"flagforge envelope v1\0";

/// A signed module release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_FORMAT`].
    pub format: u32,
    /// Ruleset name (the Kafka key).
    pub ruleset: String,
    /// Monotonic per ruleset.
    pub version: u64,
    /// sha256 of `module`, lowercase hex.
    pub sha256: String,
    /// The module bytes.
    #[serde(with = "serde_bytes")]
    pub module: Vec<u8>,
    /// When it was published (RFC 3339).
    pub created_at: String,
    /// Key id of the author.
    pub author: String,
    /// Why.
    pub reason: Option<String>,
    /// Change reference (ticket, pull request).
    pub change: Option<String>,
    /// Signatures: the author's, and approvals.
    pub signatures: Vec<Signature>,
    /// sha256 of the module this version replaces (the diff's old side); `None` for a first
    /// version or an ungoverned publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The semantic diff from `previous`, as encoded by flagforge-governance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<serde_bytes::ByteBuf>,
    /// The numbering epoch: versions are ordered by `(epoch, version)`; absent is epoch 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// One signature over the envelope's signing bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id.
    pub key_id: String,
    /// `author` or `approver`.
    pub role: String,
    /// Ed25519 signature (64 bytes).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// What the author provides; [`Envelope::sign`] fills in the rest.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// Ruleset name.
    pub ruleset: String,
    /// Version to publish.
    pub version: u64,
    /// Module bytes.
    pub module: Vec<u8>,
    /// RFC 3339 time.
    pub created_at: String,
    /// Why.
    pub reason: Option<String>,
    /// Change reference.
    pub change: Option<String>,
    /// sha256 of the module this version replaces.
    pub previous: Option<String>,
    /// The encoded semantic diff from `previous`.
    pub changes: Option<Vec<u8>>,
    /// The numbering epoch (see [`Envelope::epoch`]).
    pub epoch: Option<u64>,
}

/// Why an envelope (or a snapshot of one) was refused. Hosts count these by [`Self::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// Not a decodable envelope.
    #[error("not an envelope: {0}")]
    Garbage(String),
    /// An envelope format this host does not read.
    #[error("envelope format {0} is not supported (this host reads format {ENVELOPE_FORMAT})")]
    Format(u32),
    /// The ruleset name is empty or not a safe name.
    #[error(
        "ruleset name `{0}` is not allowed (letters, digits, `-`, `_`, `.`; not starting with `.`)"
    )]
    BadRuleset(String),
    /// The module does not hash to the recorded sha256.
    #[error("module bytes do not match the recorded sha256")]
    HashMismatch,
    /// No author signature.
    #[error("envelope is not signed by its author")]
    Unsigned,
    /// The author's key is not trusted here.
    #[error("author key `{0}` is not trusted")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("signature by `{0}` does not verify")]
    BadSignature(String),
    /// Older than the version being served.
    #[error("version {incoming} is older than the served version {current}")]
    Stale {
        /// Version received.
        incoming: Position,
        /// Version served.
        current: Position,
    },
    /// The record's key is not the envelope's ruleset (hosts and publishers would file it
    /// under different names).
    #[error("the record key `{key}` is not the envelope's ruleset `{ruleset}`")]
    KeyMismatch {
        /// The record key (lossy UTF-8).
        key: String,
        /// The envelope's ruleset.
        ruleset: String,
    },
    /// Larger than any record accepted.
    #[error("the record is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl RejectReason {
    /// A stable short name for metrics labels.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            RejectReason::Garbage(_) => "garbage",
            RejectReason::Format(_) => "format",
            RejectReason::BadRuleset(_) => "bad_ruleset",
            RejectReason::HashMismatch => "hash_mismatch",
            RejectReason::Unsigned => "unsigned",
            RejectReason::UnknownKey(_) => "unknown_key",
            RejectReason::BadSignature(_) => "bad_signature",
            RejectReason::Stale { .. } => "stale",
            RejectReason::KeyMismatch { .. } => "key_mismatch",
            RejectReason::TooLarge { .. } => "too_large",
        }
    }
}

#[derive(Serialize)]
struct SigningFields<'a> {
    format: u32,
    ruleset: &'a str,
    version: u64,
    sha256: &'a str,
    created_at: &'a str,
    author: &'a str,
    reason: Option<&'a str>,
    change: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    changes: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

/// Where an envelope stands in its ruleset's history: ordered by epoch, then version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Numbering epoch (0 for envelopes without one).
    pub epoch: u64,
    /// Version within the epoch.
    pub version: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch == 0 {
            write!(f, "{}", self.version)
        } else {
            write!(f, "{} (epoch {})", self.version, self.epoch)
        }
    }
}

/// Whether a ruleset name is safe as a Kafka key and a file name.
#[must_use]
pub fn valid_ruleset(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Envelope {
    /// Signs a draft as its author.
    #[must_use]
    pub fn sign(draft: Draft, key: &KeyPair) -> Envelope {
        let mut env = Envelope {
            format: ENVELOPE_FORMAT,
            ruleset: draft.ruleset,
            version: draft.version,
            sha256: hex::encode(Sha256::digest(&draft.module)),
            module: draft.module,
            created_at: draft.created_at,
            author: key.public().id().to_owned(),
            reason: draft.reason,
            change: draft.change,
            signatures: Vec::new(),
            previous: draft.previous,
            changes: draft.changes.map(serde_bytes::ByteBuf::from),
            epoch: draft.epoch,
        };
        let signature = key.sign(&env.signing_bytes());
        env.signatures.push(Signature {
            key_id: env.author.clone(),
            role: "author".into(),
            signature,
        });
        env
    }

    /// The bytes signatures cover.
    #[must_use]
    pub fn signing_bytes(&self) -> Vec<u8> {
        let fields = SigningFields {
            format: self.format,
            ruleset: &self.ruleset,
            version: self.version,
            sha256: &self.sha256,
            created_at: &self.created_at,
            author: &self.author,
            reason: self.reason.as_deref(),
            change: self.change.as_deref(),
            previous: self.previous.as_deref(),
            changes: self.changes.as_deref().map(|b| &b[..]),
            epoch: self.epoch,
        };
        let mut out = SIGNING_DOMAIN.to_vec();
        // Writing to a Vec cannot fail.
        let _ = rmp_serde::encode::write_named(&mut out, &fields);
        out
    }

    /// Encodes the envelope.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes an envelope (structure only; call [`Self::verify`] before trusting it).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, RejectReason> {
        rmp_serde::from_slice(bytes).map_err(|e| RejectReason::Garbage(e.to_string()))
    }

    /// Where this envelope stands in its ruleset's history.
    #[must_use]
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch.unwrap_or(0),
            version: self.version,
        }
    }

    /// The one check every reader of the modules topic applies to a record before acting on
    /// it (hosts before serving, publishers before numbering a release above it): size bound,
    /// decode, record key equal to the ruleset, then [`Self::verify`].
    pub fn from_record(
        key: Option<&[u8]>,
        bytes: &[u8],
        trusted: &TrustedKeys,
    ) -> Result<Envelope, RejectReason> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RejectReason::TooLarge {
                size: bytes.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let env = Envelope::decode(bytes)?;
        if key != Some(env.ruleset.as_bytes()) {
            return Err(RejectReason::KeyMismatch {
                key: key.map_or_else(
                    || "(none)".to_owned(),
                    |k| String::from_utf8_lossy(k).into_owned(),
                ),
                ruleset: env.ruleset,
            });
        }
        env.verify(trusted)?;
        Ok(env)
    }

    /// Checks format, ruleset name, module hash and the author's signature against the
    /// trusted keys.
    pub fn verify(&self, trusted: &TrustedKeys) -> Result<(), RejectReason> {
        if self.format != ENVELOPE_FORMAT {
            return Err(RejectReason::Format(self.format));
        }
        if !valid_ruleset(&self.ruleset) {
            return Err(RejectReason::BadRuleset(self.ruleset.clone()));
        }
        if hex::encode(Sha256::digest(&self.module)) != self.sha256 {
            return Err(RejectReason::HashMismatch);
        }
        self.verify_author(trusted)
    }

    /// Checks only the author's signature (the module bytes are not needed: an audit record
    /// carries the envelope without them).
    pub fn verify_author(&self, trusted: &TrustedKeys) -> Result<(), RejectReason> {
        let sig = self
            .signatures
            .iter()
            .find(|s| s.role == "author" && s.key_id == self.author)
            .ok_or(RejectReason::Unsigned)?;
        let key = trusted
            .get(&sig.key_id)
            .ok_or_else(|| RejectReason::UnknownKey(sig.key_id.clone()))?;
        if !key.verify(&self.signing_bytes(), &sig.signature) {
            return Err(RejectReason::BadSignature(sig.key_id.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn draft(version: u64, module: &[u8]) -> Draft {
        Draft {
            ruleset: "checkout".into(),
            version,
            module: module.to_vec(),
            created_at: "2026-11-25T10:00:00Z".into(),
            reason: Some("launch".into()),
            change: Some("PR-1".into()),
            previous: None,
            changes: None,
            epoch: None,
        }
    }

    #[test]
    fn a_signed_envelope_round_trips_and_verifies() {
        let key = KeyPair::generate().unwrap();
        let env = Envelope::sign(draft(3, b"module"), &key);
        let back = Envelope::decode(&env.encode()).unwrap();
        assert_eq!(back, env);
        back.verify(&TrustedKeys::new([key.public()])).unwrap();
    }

    #[test]
    fn every_kind_of_tampering_is_rejected_with_its_reason() {
        let key = KeyPair::generate().unwrap();
        let trusted = TrustedKeys::new([key.public()]);
        let good = Envelope::sign(draft(3, b"module"), &key);
        type Tamper = Box<dyn Fn(&mut Envelope)>;
        let cases: Vec<(Tamper, &str)> = vec![
            (Box::new(|e| e.module[0] ^= 1), "hash_mismatch"),
            (Box::new(|e| e.version += 1), "bad_signature"),
            (
                Box::new(|e| e.reason = Some("other".into())),
                "bad_signature",
            ),
            (
                Box::new(|e| e.created_at = "2030-01-01T00:00:00Z".into()),
                "bad_signature",
            ),
            (Box::new(|e| e.signatures.clear()), "unsigned"),
            (
                Box::new(|e| e.signatures[0].signature[5] ^= 1),
                "bad_signature",
            ),
            (
                Box::new(|e| e.signatures[0].signature.truncate(10)),
                "bad_signature",
            ),
            (Box::new(|e| e.format = 2), "format"),
            (
                Box::new(|e| e.previous = Some("ab".repeat(32))),
                "bad_signature",
            ),
            (
                Box::new(|e| e.changes = Some(serde_bytes::ByteBuf::from(vec![0x90]))),
                "bad_signature",
            ),
            (Box::new(|e| e.ruleset = "../etc".into()), "bad_ruleset"),
            (Box::new(|e| e.epoch = Some(1)), "bad_signature"),
        ];
        for (tamper, kind) in cases {
            let mut e = good.clone();
            tamper(&mut e);
            assert_eq!(e.verify(&trusted).unwrap_err().kind(), kind);
        }
        let stranger = KeyPair::generate().unwrap();
        let foreign = Envelope::sign(draft(3, b"module"), &stranger);
        assert_eq!(foreign.verify(&trusted).unwrap_err().kind(), "unknown_key");
    }

    #[test]
    fn a_record_is_refused_when_its_key_is_not_its_ruleset_or_it_is_too_large() {
        let key = KeyPair::generate().unwrap();
        let trusted = TrustedKeys::new([key.public()]);
        let env = Envelope::sign(draft(3, b"module"), &key);
        let bytes = env.encode();
        assert_eq!(
            Envelope::from_record(Some(b"checkout"), &bytes, &trusted).unwrap(),
            env
        );
        for k in [Some(&b"pricing"[..]), None] {
            assert_eq!(
                Envelope::from_record(k, &bytes, &trusted)
                    .unwrap_err()
                    .kind(),
                "key_mismatch"
            );
        }
        let huge = vec![0u8; MAX_RECORD_BYTES + 1];
        assert_eq!(
            Envelope::from_record(Some(b"checkout"), &huge, &trusted)
                .unwrap_err()
                .kind(),
            "too_large"
        );
    }

    #[test]
    fn garbage_is_not_an_envelope() {
        for bytes in [
            &b""[..],
            b"\xc1",
            b"{\"json\": 1}",
            &[0x81, 0xa1, b'x', 0x01],
        ] {
            assert_eq!(Envelope::decode(bytes).unwrap_err().kind(), "garbage");
        }
    }

    #[test]
    fn the_module_is_stored_as_bytes_not_a_list_of_numbers() {
        let key = KeyPair::generate().unwrap();
        let env = Envelope::sign(draft(1, &[0xffu8; 100_000]), &key);
        assert!(env.encode().len() < 100_600, "{}", env.encode().len());
    }
}
