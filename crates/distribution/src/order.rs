//! Which envelope a host keeps for a ruleset.
//!
//! Versions only move forward, ordered by [`Position`] (epoch, then version). A higher
//! position replaces the served one; a lower one is stale; the same version with the same module is a duplicate (no-op, e.g. a replay or the
//! compacted topic delivering the last record twice). Two publishers racing can produce the
//! same version with different modules: the one that comes **later in the log** wins. Every
//! host reads the partition in the same order, and compaction keeps exactly the last record
//! per key, so hosts that read both records and hosts that start after compaction end on the
//! same module, with nothing for a publisher to repair. (`decide` is called in log order: the
//! incoming envelope is the later one.) Only envelopes verified against a trusted key reach
//! this rule, so an equal-version envelope with another module is a racing publisher, not a
//! replay.

use crate::envelope::{Envelope, Position, RejectReason};

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

/// Decides between the served `(position, sha256)` (if any) and an incoming verified
/// envelope.
#[must_use]
pub fn decide(current: Option<(Position, &str)>, incoming: &Envelope) -> Decision {
    let Some((position, sha)) = current else {
        return Decision::Accept;
    };
    match incoming.position().cmp(&position) {
        std::cmp::Ordering::Greater => Decision::Accept,
        std::cmp::Ordering::Less => Decision::Reject(RejectReason::Stale {
            incoming: incoming.position(),
            current: position,
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
        let at = |version| Position { epoch: 0, version };
        assert_eq!(decide(None, &v5), Decision::Accept);
        assert_eq!(decide(Some((at(4), "x")), &v5), Decision::Accept);
        assert_eq!(decide(Some((at(5), &v5.sha256)), &v5), Decision::Duplicate);
        assert!(matches!(
            decide(Some((at(6), "x")), &v5),
            Decision::Reject(RejectReason::Stale { incoming, current })
                if incoming == at(5) && current == at(6)
        ));
    }

    #[test]
    fn a_new_epoch_starts_over_at_version_one_and_wins_over_any_older_epoch() {
        let key = KeyPair::generate().unwrap();
        let mut d = draft(1, b"after data loss");
        d.epoch = Some(1_800_000_000_000);
        let fresh = Envelope::sign(d, &key);
        let old = Position {
            epoch: 1_700_000_000_000,
            version: 41,
        };
        assert_eq!(decide(Some((old, "x")), &fresh), Decision::Accept);
        assert_eq!(
            decide(
                Some((
                    Position {
                        epoch: 0,
                        version: 9
                    },
                    "x"
                )),
                &fresh
            ),
            Decision::Accept
        );
        let newer = Position {
            epoch: 1_900_000_000_000,
            version: 1,
        };
        assert!(matches!(
            decide(Some((newer, "x")), &fresh),
            Decision::Reject(_)
        ));
    }

    #[test]
    fn among_equal_versions_the_later_record_wins() {
        let key = KeyPair::generate().unwrap();
        let a = Envelope::sign(draft(7, b"publisher A"), &key);
        let b = Envelope::sign(draft(7, b"publisher B"), &key);
        // Whatever the hashes, the record read later replaces the earlier one: hosts reading
        // the log in order end where compaction ends, on the last record.
        assert_eq!(
            decide(Some((a.position(), &a.sha256)), &b),
            Decision::Accept
        );
        assert_eq!(
            decide(Some((b.position(), &b.sha256)), &a),
            Decision::Accept
        );
    }
}
