//! Release planning without a broker: the publisher builds only on records it verified. Each
//! attack on the publisher (a maximal version, "unchanged" bait, a forged audit record, a
//! correctly signed envelope under the wrong record key) is a case here, and numbering after a
//! broker lost its data starts a new epoch that hosts accept.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

use flagforge_distribution::{decide, Decision, Draft, Envelope, KeyPair, Position, TrustedKeys};
use flagforge_governance::audit::{link, without_module, AuditRecord, AUDIT_FORMAT};
use flagforge_governance::release::{
    plan, seal, verified_audit, Ledger, Plan, ReleaseError, Request,
};

fn module(market: &str) -> Vec<u8> {
    flagforge_compiler::compile_path_edited(&rules_examples::dir("checkout"), |p, t| {
        if p.file_name().unwrap() == "policy.yaml" {
            t.replace("market == \"AT\"'", &format!("market == \"{market}\"'"))
        } else {
            t
        }
    })
    .unwrap()
    .module
}

fn sha(m: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(m))
}

fn request<'a>(module: &'a [u8], sha256: &'a str) -> Request<'a> {
    Request {
        ruleset: "checkout",
        module,
        sha256,
        now_ms: 1_800_000_000_000,
        created_at: "2026-11-28T12:00:00Z",
        reason: None,
        change: None,
    }
}

fn signed(key: &KeyPair, version: u64, epoch: Option<u64>, module: &[u8]) -> Envelope {
    Envelope::sign(
        Draft {
            ruleset: "checkout".into(),
            version,
            module: module.to_vec(),
            created_at: "2026-11-28T11:00:00Z".into(),
            epoch,
            ..Draft::default()
        },
        key,
    )
}

/// An envelope as an attacker without a key makes it: a valid structure, no signature.
fn unsigned(version: u64, module: &[u8]) -> Envelope {
    let mut e = signed(&KeyPair::generate().unwrap(), version, None, module);
    e.signatures.clear();
    e
}

struct World {
    key: KeyPair,
    ledger: Ledger,
    v1: Vec<u8>,
    v2: Vec<u8>,
}

fn world() -> World {
    let key = KeyPair::generate().unwrap();
    let ledger = Ledger::new(TrustedKeys::new([key.public()]), None);
    World {
        key,
        ledger,
        v1: module("AT"),
        v2: module("CH"),
    }
}

fn next_position(p: &Plan) -> Position {
    match p {
        Plan::Next { draft, .. } => Position {
            epoch: draft.epoch.unwrap_or(0),
            version: draft.version,
        },
        other => panic!("expected the next version, got {other:?}"),
    }
}

#[test]
fn an_unsigned_maximal_version_is_ignored_and_a_signed_one_is_a_refusal_not_a_panic() {
    let mut w = world();
    let v1 = signed(&w.key, 1, Some(5), &w.v1);
    w.ledger.observe(Some(b"checkout"), &v1.encode()).unwrap();
    let bait = unsigned(u64::MAX, &w.v1);
    assert_eq!(
        w.ledger
            .observe(Some(b"checkout"), &bait.encode())
            .unwrap_err()
            .kind(),
        "unsigned"
    );
    let sha2 = sha(&w.v2);
    let p = plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &[]).unwrap();
    assert_eq!(
        next_position(&p),
        Position {
            epoch: 5,
            version: 2
        }
    );
    // A trusted author's maximal version: numbering above it is refused with a reason.
    let max = signed(&w.key, u64::MAX, Some(5), &w.v1);
    w.ledger.observe(Some(b"checkout"), &max.encode()).unwrap();
    let e = plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &[]).unwrap_err();
    assert!(matches!(e, ReleaseError::Exhausted { .. }), "{e}");
}

#[test]
fn unsigned_unchanged_bait_does_not_swallow_the_release() {
    let mut w = world();
    let v1 = signed(&w.key, 1, Some(5), &w.v1);
    w.ledger.observe(Some(b"checkout"), &v1.encode()).unwrap();
    // An attacker puts the module about to be published on the topic, unsigned.
    let bait = unsigned(2, &w.v2);
    assert!(w.ledger.observe(Some(b"checkout"), &bait.encode()).is_err());
    let sha2 = sha(&w.v2);
    let p = plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &[]).unwrap();
    assert_eq!(next_position(&p).version, 2);
    // The same module signed by a trusted author is "unchanged".
    let real = signed(&w.key, 2, Some(5), &w.v2);
    w.ledger.observe(Some(b"checkout"), &real.encode()).unwrap();
    let p = plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &[]).unwrap();
    assert!(matches!(p, Plan::Unchanged { .. }), "{p:?}");
}

fn audit_record(env: &Envelope, prev: &[u8], seq: u64) -> Vec<u8> {
    AuditRecord {
        format: AUDIT_FORMAT,
        seq,
        prev: if prev.is_empty() {
            String::new()
        } else {
            link(prev)
        },
        recorded_at: env.created_at.clone(),
        author: "mallory".into(),
        approvers: vec![],
        envelope: without_module(env),
    }
    .encode()
}

#[test]
fn a_forged_audit_record_does_not_block_other_releases() {
    let w = world();
    let trusted = TrustedKeys::new([w.key.public()]);
    // An unsigned record claiming an interrupted v9 of another module, and one signed by a key
    // nobody trusts.
    let forged = audit_record(&unsigned(9, &w.v1), &[], 0);
    let stranger = audit_record(
        &signed(&KeyPair::generate().unwrap(), 9, None, &w.v1),
        &forged,
        1,
    );
    let garbage = b"not a record".to_vec();
    let (records, ignored) = verified_audit(&[forged, stranger, garbage], &trusted);
    assert_eq!((records.len(), ignored), (0, 3));
    let audit: Vec<AuditRecord> = records.into_iter().map(|(_, r)| r).collect();
    let sha2 = sha(&w.v2);
    assert!(plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &audit).is_ok());
    // A genuine interrupted publish (signed by a trusted author) is still detected and
    // completed only with its own module.
    let real = audit_record(&signed(&w.key, 1, Some(7), &w.v1), &[], 0);
    let (records, _) = verified_audit(&[real], &trusted);
    let audit: Vec<AuditRecord> = records.into_iter().map(|(_, r)| r).collect();
    let e = plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &audit).unwrap_err();
    assert!(matches!(e, ReleaseError::Interrupted { .. }), "{e}");
    let sha1 = sha(&w.v1);
    match plan(request(&w.v1, &sha1), &w.ledger.history("checkout"), &audit).unwrap() {
        Plan::Complete(env) => {
            assert_eq!(env.module, w.v1);
            env.verify(&trusted).unwrap();
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_envelope_under_another_record_key_is_ignored_by_the_publisher_as_by_hosts() {
    let mut w = world();
    let v1 = signed(&w.key, 1, Some(5), &w.v1);
    w.ledger.observe(Some(b"checkout"), &v1.encode()).unwrap();
    let v7 = signed(&w.key, 7, Some(5), &w.v2);
    assert_eq!(
        w.ledger
            .observe(Some(b"pricing"), &v7.encode())
            .unwrap_err()
            .kind(),
        "key_mismatch"
    );
    assert_eq!(w.ledger.ignored().get("key_mismatch"), Some(&1));
    assert_eq!(
        w.ledger.history("checkout").highest,
        Some(Position {
            epoch: 5,
            version: 1
        })
    );
    assert!(w.ledger.history("pricing").latest.is_none());
}

#[test]
fn after_data_loss_the_next_release_starts_an_epoch_that_every_host_accepts() {
    let w = world();
    // Hosts serve v41 of an old epoch; the topic lost everything.
    let served = signed(&w.key, 41, Some(1_700_000_000_000), &w.v1);
    let sha2 = sha(&w.v2);
    let p = plan(request(&w.v2, &sha2), &w.ledger.history("checkout"), &[]).unwrap();
    let Plan::Next {
        draft, new_epoch, ..
    } = p
    else {
        panic!("{p:?}")
    };
    assert!(new_epoch);
    let (env, _) = seal(draft, &w.key, &[], None, None, 900 * 1024).unwrap();
    assert_eq!(env.version, 1);
    assert_eq!(
        decide(Some((served.position(), &served.sha256)), &env),
        Decision::Accept
    );
}

#[test]
fn an_untrusted_but_validly_signed_newer_version_is_reported() {
    let mut w = world();
    let v1 = signed(&w.key, 1, Some(5), &w.v1);
    w.ledger.observe(Some(b"checkout"), &v1.encode()).unwrap();
    let other = KeyPair::generate().unwrap();
    let theirs = signed(&other, 3, Some(5), &w.v2);
    assert!(w
        .ledger
        .observe(Some(b"checkout"), &theirs.encode())
        .is_err());
    let (key, at) = w.ledger.untrusted_newer("checkout").unwrap();
    assert_eq!(key, other.public().id());
    assert_eq!(at.version, 3);
}
