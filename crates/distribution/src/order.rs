//! Which envelope a host keeps for a ruleset.
//!
//! Versions only move forward. A higher version replaces the served one; a lower one is
//! stale; the same version with the same module is a duplicate (no-op, e.g. a replay or the
//! compacted topic delivering the last record twice). Two publishers racing can produce the
//! same version with different modules: the one that comes **later in the log** wins. Every
//! host reads the partition in the same order, and compaction keeps exactly the last record
//! per key, so hosts that read both records and hosts that start after compaction end on the
//! same module, with nothing for a publisher to repair. (`decide` is called in log order: the
//! incoming envelope is the later one.) Only envelopes verified against a trusted key reach
//! this rule, so an equal-version envelope with another module is a racing publisher, not a
//! replay.

use crate::envelope::{Envelope, RejectReason};

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve the incoming envelope.
    Accept,
    /// Already serving exactly this module at this version.
    Duplicate,
    /// Keep the served one.
    Reject(RejectReason),
}

/// Decides between the served `(version, sha256)` (if any) and an incoming verified envelope.
#[must_use]
pub fn decide(current: Option<(u64, &str)>, incoming: &Envelope) -> Decision {
    let Some((version, sha)) = current else {
        return Decision::Accept;
    };
    match incoming.version.cmp(&version) {
        std::cmp::Ordering::Greater => Decision::Accept,
        std::cmp::Ordering::Less => Decision::Reject(RejectReason::Stale {
            incoming: incoming.version,
            current: version,
        }),
        std::cmp::Ordering::Equal if incoming.sha256 == sha => Decision::Duplicate,
        std::cmp::Ordering::Equal => Decision::Accept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::draft;
    use crate::KeyPair;

    #[test]
    fn versions_only_move_forward() {
        let key = KeyPair::generate().unwrap();
        let v5 = Envelope::sign(draft(5, b"a"), &key);
        assert_eq!(decide(None, &v5), Decision::Accept);
        assert_eq!(decide(Some((4, "x")), &v5), Decision::Accept);
        assert_eq!(decide(Some((5, &v5.sha256)), &v5), Decision::Duplicate);
        assert!(matches!(
            decide(Some((6, "x")), &v5),
            Decision::Reject(RejectReason::Stale {
                incoming: 5,
                current: 6
            })
        ));
    }

    #[test]
    fn among_equal_versions_the_later_record_wins() {
        let key = KeyPair::generate().unwrap();
        let a = Envelope::sign(draft(7, b"publisher A"), &key);
        let b = Envelope::sign(draft(7, b"publisher B"), &key);
        // Whatever the hashes, the record read later replaces the earlier one: hosts reading
        // the log in order end where compaction ends, on the last record.
        assert_eq!(decide(Some((a.version, &a.sha256)), &b), Decision::Accept);
        assert_eq!(decide(Some((b.version, &b.sha256)), &a), Decision::Accept);
    }
}
