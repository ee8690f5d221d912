//! The audit record every publish appends to the audit topic, hash-chained: each record names
//! the sha256 of the previous record's bytes, so altering, removing or reordering a record
//! breaks the next link. A record holds the envelope without its module bytes (every signed
//! field and every signature), so it proves who published and approved what, and is enough
//! to complete an interrupted publish given the module file.

use flagforge_distribution::Envelope;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::approval::decode_changes;
use crate::Change;

/// Version of the record encoding.
pub const AUDIT_FORMAT: u32 = 1;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// [`AUDIT_FORMAT`].
    pub format: u32,
    /// Position in the chain, from 0.
    pub seq: u64,
    /// sha256 (hex) of the previous record's bytes; empty for the first record.
    pub prev: String,
    /// When the publisher wrote it (RFC 3339).
    pub recorded_at: String,
    /// The author's identity (from the trust file; the key id without one).
    pub author: String,
    /// The approvers' identities.
    pub approvers: Vec<String>,
    /// The envelope, module bytes removed (`module` is empty; `sha256` names it).
    pub envelope: Envelope,
}

impl AuditRecord {
    /// The record's bytes on the topic.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes a record.
    pub fn decode(bytes: &[u8]) -> Result<AuditRecord, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The change list it records.
    #[must_use]
    pub fn changes(&self) -> Vec<Change> {
        self.envelope
            .changes
            .as_deref()
            .and_then(|c| decode_changes(c).ok())
            .unwrap_or_default()
    }
}

/// The hash the next record names as `prev`.
#[must_use]
pub fn link(record_bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(record_bytes))
}

/// The envelope as an audit record keeps it.
#[must_use]
pub fn without_module(env: &Envelope) -> Envelope {
    let mut e = env.clone();
    e.module = Vec::new();
    e
}

/// A break in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// Index of the first record that does not follow its predecessor.
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// Walks the chain (records in log order, as bytes); `Err` is the first broken link.
pub fn verify_chain(records: &[Vec<u8>]) -> Result<Vec<AuditRecord>, BrokenLink> {
    let mut out = Vec::with_capacity(records.len());
    for (i, bytes) in records.iter().enumerate() {
        let r = AuditRecord::decode(bytes).map_err(|e| BrokenLink {
            index: i,
            reason: format!("not an audit record: {e}"),
        })?;
        let expected = if i == 0 {
            String::new()
        } else {
            link(&records[i - 1])
        };
        if r.prev != expected {
            return Err(BrokenLink {
                index: i,
                reason: if i == 0 {
                    format!("the first record names a predecessor ({})", r.prev)
                } else {
                    format!(
                        "it names previous record hash {}, but the record before it hashes to {expected}: that record was altered, or records were removed or reordered",
                        r.prev
                    )
                },
            });
        }
        if r.seq != i as u64 {
            return Err(BrokenLink {
                index: i,
                reason: format!(
                    "sequence number {} where {i} was expected: records were removed or reordered",
                    r.seq
                ),
            });
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flagforge_distribution::{Draft, KeyPair};

    fn chain(n: usize) -> Vec<Vec<u8>> {
        let key = KeyPair::generate().unwrap();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for i in 0..n {
            let env = Envelope::sign(
                Draft {
                    ruleset: "checkout".into(),
                    version: i as u64 + 1,
                    module: vec![i as u8; 8],
                    created_at: "2026-11-25T10:00:00Z".into(),
                    ..Draft::default()
                },
                &key,
            );
            let record = AuditRecord {
                format: AUDIT_FORMAT,
                seq: i as u64,
                prev: out.last().map(|b| link(b)).unwrap_or_default(),
                recorded_at: "2026-11-25T10:00:00Z".into(),
                author: "alice".into(),
                approvers: vec![],
                envelope: without_module(&env),
            };
            out.push(record.encode());
        }
        out
    }

    #[test]
    fn altering_removing_or_reordering_a_record_breaks_the_next_link() {
        let good = chain(4);
        assert_eq!(verify_chain(&good).unwrap().len(), 4);
        let mut altered = good.clone();
        let at = altered[1].windows(5).position(|w| w == b"alice").unwrap();
        altered[1][at] = b'A';
        assert_eq!(verify_chain(&altered).unwrap_err().index, 2);
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed).unwrap_err().index, 1);
        let mut swapped = good.clone();
        swapped.swap(2, 3);
        assert_eq!(verify_chain(&swapped).unwrap_err().index, 2);
        let mut garbage = good;
        garbage[3] = b"not a record".to_vec();
        assert_eq!(verify_chain(&garbage).unwrap_err().index, 3);
    }
}
