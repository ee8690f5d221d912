//! Detached approvals: an approver signs a statement naming the module (ruleset, sha256), the
//! version it replaces (`previous`) and the exact diff between them (sha256 of the encoded
//! changes). The statement does not name the envelope's version or time, so an approval can be
//! given before publishing; it does name the diff, so it cannot be reused for another change.

use flagforge_distribution::{Envelope, KeyPair, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Change;

const APPROVAL_DOMAIN: &[u8] = b"flagforge approval v1\0";

/// Encodes a change list as it travels in envelopes and approvals (MessagePack, named fields:
/// the same list always gives the same bytes).
#[must_use]
pub fn encode_changes(changes: &[Change]) -> Vec<u8> {
    rmp_serde::to_vec_named(changes).unwrap_or_default()
}

/// Decodes [`encode_changes`].
pub fn decode_changes(bytes: &[u8]) -> Result<Vec<Change>, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct Statement<'a> {
    ruleset: &'a str,
    sha256: &'a str,
    previous: Option<&'a str>,
    changes_sha256: String,
}

/// The bytes an approval signs.
#[must_use]
pub fn statement(ruleset: &str, sha256: &str, previous: Option<&str>, changes: &[u8]) -> Vec<u8> {
    signed_bytes(&Statement {
        ruleset,
        sha256,
        previous,
        changes_sha256: hex::encode(Sha256::digest(changes)),
    })
}

fn signed_bytes(statement: &Statement<'_>) -> Vec<u8> {
    let mut out = APPROVAL_DOMAIN.to_vec();
    // Writing to a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(&mut out, statement);
    out
}

/// The statement an envelope's approvals must sign.
#[must_use]
pub fn envelope_statement(env: &Envelope) -> Vec<u8> {
    statement(
        &env.ruleset,
        &env.sha256,
        env.previous.as_deref(),
        env.changes.as_deref().map_or(&[][..], |c| &c[..]),
    )
}

/// A detached approval (`flagforge approve` writes it as JSON next to the module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Ruleset.
    pub ruleset: String,
    /// Approved module's sha256.
    pub sha256: String,
    /// The module it replaces (`None`: the first version).
    pub previous: Option<String>,
    /// sha256 of the encoded change list approved.
    pub changes_sha256: String,
    /// The approver's key id.
    pub key_id: String,
    /// Ed25519 signature over [`statement`], hex.
    pub signature: String,
}

impl Approval {
    /// Signs an approval of `changes` turning `previous` into module `sha256`.
    #[must_use]
    pub fn sign(
        key: &KeyPair,
        ruleset: &str,
        sha256: &str,
        previous: Option<&str>,
        changes: &[u8],
    ) -> Approval {
        Approval {
            ruleset: ruleset.to_owned(),
            sha256: sha256.to_owned(),
            previous: previous.map(str::to_owned),
            changes_sha256: hex::encode(Sha256::digest(changes)),
            key_id: key.public().id().to_owned(),
            signature: hex::encode(key.sign(&statement(ruleset, sha256, previous, changes))),
        }
    }

    /// Whether this approval is for exactly this envelope's module, predecessor and diff.
    /// `Err` says what differs.
    pub fn matches(&self, env: &Envelope) -> Result<(), String> {
        let changes = env.changes.as_deref().map_or(&[][..], |c| &c[..]);
        if self.ruleset != env.ruleset || self.sha256 != env.sha256 {
            return Err(format!(
                "approval by {} is for {} sha256 {}, not this module",
                self.key_id, self.ruleset, self.sha256
            ));
        }
        if self.previous != env.previous {
            return Err(format!(
                "approval by {} was given against previous version {}, but the topic now holds {}: approve the change again",
                self.key_id,
                self.previous.as_deref().unwrap_or("(none)"),
                env.previous.as_deref().unwrap_or("(none)")
            ));
        }
        if self.changes_sha256 != hex::encode(Sha256::digest(changes)) {
            return Err(format!(
                "approval by {} covers another diff: approve the change again",
                self.key_id
            ));
        }
        Ok(())
    }

    /// The signature bytes (`None` if not hex).
    #[must_use]
    pub fn signature_bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.signature).ok()
    }

    /// Whether the signature verifies with `key`.
    #[must_use]
    pub fn verifies(&self, key: &PublicKey) -> bool {
        self.signature_bytes().is_some_and(|sig| {
            let statement = signed_bytes(&Statement {
                ruleset: &self.ruleset,
                sha256: &self.sha256,
                previous: self.previous.as_deref(),
                changes_sha256: self.changes_sha256.clone(),
            });
            key.verify(&statement, &sig)
        })
    }
}
