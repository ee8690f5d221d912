//! Which envelope a host keeps for a ruleset.
//!
//! Versions only move forward. A higher version replaces the served one; a lower one is
//! stale; the same version with the same module is a duplicate (no-op, e.g. a replay or the
//! compacted topic delivering the last record twice). Two publishers racing can produce the
//! same version with different modules: the one with the greater sha256 (as hex text) wins,
//! so every host that sees both ends on the same module whatever order it read them in.
//! (A host that starts after compaction sees only the surviving record; the publisher closes
//! that gap by reading the topic back after producing and republishing at the next version if
//! it lost — see the Kafka issue.)

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
        std::cmp::Ordering::Equal if incoming.sha256.as_str() > sha => Decision::Accept,
        std::cmp::Ordering::Equal => Decision::Reject(RejectReason::Conflict(version)),
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
    fn racing_publishers_converge_whatever_the_order() {
        let key = KeyPair::generate().unwrap();
        let a = Envelope::sign(draft(7, b"publisher A"), &key);
        let b = Envelope::sign(draft(7, b"publisher B"), &key);
        let winner = if a.sha256 > b.sha256 { &a } else { &b };
        for (first, second) in [(&a, &b), (&b, &a)] {
            let mut served = first;
            if decide(Some((served.version, &served.sha256)), second) == Decision::Accept {
                served = second;
            }
            assert_eq!(served.sha256, winner.sha256);
        }
    }
}
