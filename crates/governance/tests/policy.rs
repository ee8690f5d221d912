//! The trust file and the policy, without a broker: located trust-file errors, what a host
//! that holds the replaced module checks (the recomputed diff) and what a fresh host checks
//! (the new side of the claimed diff), approvals that do not count, and scopes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

use flagforge_distribution::{Draft, Envelope, KeyPair, Signature};
use flagforge_governance::policy::{check, Refusal, Replaced};
use flagforge_governance::{diff, encode_changes, module_rules, Approval, Change, Trust};
use flagforge_model::ir::RulesetIr;

fn module(edit: impl Fn(&str, String) -> String) -> Vec<u8> {
    flagforge_compiler::compile_path_edited(&rules_examples::dir("checkout"), |p, t| {
        edit(p.file_name().unwrap().to_str().unwrap(), t)
    })
    .unwrap()
    .module
}

fn rules(m: &[u8]) -> RulesetIr {
    module_rules(m).unwrap()
}

fn sha(m: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(m))
}

struct World {
    alice: KeyPair,
    bob: KeyPair,
    carol: KeyPair,
    trust: Trust,
    v1: Vec<u8>,
    v2: Vec<u8>,
}

fn world() -> World {
    let (alice, bob, carol) = (
        KeyPair::generate().unwrap(),
        KeyPair::generate().unwrap(),
        KeyPair::generate().unwrap(),
    );
    let trust = Trust::parse(
        "trust.yaml",
        &format!(
            "keys:\n  - identity: alice\n    key: {}\n    roles: [author, approver]\n    owners: [\"*\"]\n  - identity: bob\n    key: {}\n    roles: [approver]\n    owners: [finance-platform]\n  - identity: carol\n    key: {}\n    roles: [approver]\n    owners: [logistics-team]\n",
            alice.public().to_text(),
            bob.public().to_text(),
            carol.public().to_text()
        ),
    )
    .unwrap();
    let v1 = module(|_, t| t);
    let v2 = module(|n, t| {
        if n == "policy.yaml" {
            t.replace("market == \"AT\"'", "market == \"AT\" || market == \"CH\"'")
        } else {
            t
        }
    });
    World {
        alice,
        bob,
        carol,
        trust,
        v1,
        v2,
    }
}

/// v1 → v2 as `publish` builds it, with `changes` as claimed, signed by `author`.
fn envelope(w: &World, author: &KeyPair, changes: &[Change]) -> Envelope {
    Envelope::sign(
        Draft {
            ruleset: "checkout".into(),
            version: 2,
            module: w.v2.clone(),
            created_at: "2026-11-25T12:00:00Z".into(),
            previous: Some(sha(&w.v1)),
            changes: Some(encode_changes(changes)),
            ..Draft::default()
        },
        author,
    )
}

fn approve(env: &mut Envelope, key: &KeyPair) {
    let a = Approval::sign(
        key,
        &env.ruleset,
        &env.sha256,
        env.previous.as_deref(),
        env.changes.as_deref().unwrap(),
    );
    a.matches(env).unwrap();
    env.signatures.push(Signature {
        key_id: a.key_id.clone(),
        role: "approver".into(),
        signature: a.signature_bytes().unwrap(),
    });
}

fn kinds(r: Result<impl std::fmt::Debug, Vec<Refusal>>) -> Vec<&'static str> {
    match r {
        Ok(_) => vec![],
        Err(v) => v.iter().map(|x| x.kind).collect(),
    }
}

fn replaced(w: &World) -> Option<Replaced<'_>> {
    Some(Replaced {
        sha256: Box::leak(sha(&w.v1).into_boxed_str()),
        module: &w.v1,
    })
}

#[test]
fn an_approved_change_passes_on_a_host_holding_the_replaced_module_and_on_a_fresh_one() {
    let w = world();
    let changes = diff(Some(&rules(&w.v1)), &rules(&w.v2));
    let mut env = envelope(&w, &w.alice, &changes);
    approve(&mut env, &w.bob);
    let held = check(&w.trust, &env, replaced(&w)).unwrap();
    assert!(held.recomputed);
    let fresh = check(&w.trust, &env, None).unwrap();
    assert!(!fresh.recomputed);
    assert_eq!(fresh.approvers, vec![w.bob.public().id().to_owned()]);
}

#[test]
fn approvals_that_do_not_count_are_refused_with_their_reason() {
    let w = world();
    let changes = diff(Some(&rules(&w.v1)), &rules(&w.v2));
    // No approval at all.
    assert_eq!(
        kinds(check(
            &w.trust,
            &envelope(&w, &w.alice, &changes),
            replaced(&w)
        )),
        vec!["missing_approval"]
    );
    // The author approving their own change.
    let mut own = envelope(&w, &w.alice, &changes);
    approve(&mut own, &w.alice);
    assert_eq!(
        kinds(check(&w.trust, &own, replaced(&w))),
        vec!["bad_approval", "missing_approval"]
    );
    // An approver scoped to another owner: valid signature, but it does not count.
    let mut other = envelope(&w, &w.alice, &changes);
    approve(&mut other, &w.carol);
    assert_eq!(
        kinds(check(&w.trust, &other, replaced(&w))),
        vec!["missing_approval"]
    );
    // An approval of another diff, copied onto this envelope.
    let mut reused = envelope(&w, &w.alice, &changes);
    let elsewhere = Approval::sign(
        &w.bob,
        "checkout",
        &reused.sha256,
        reused.previous.as_deref(),
        b"other diff",
    );
    assert!(elsewhere.matches(&reused).is_err());
    reused.signatures.push(Signature {
        key_id: elsewhere.key_id.clone(),
        role: "approver".into(),
        signature: elsewhere.signature_bytes().unwrap(),
    });
    assert_eq!(
        kinds(check(&w.trust, &reused, replaced(&w))),
        vec!["bad_approval", "missing_approval"]
    );
}

#[test]
fn a_change_list_that_hides_a_change_is_caught_where_it_can_be() {
    let w = world();
    // The claim: only an ops flag's metadata changed (needs no approval). The truth: a policy
    // flag's rules changed.
    let lie: Vec<Change> = diff(Some(&rules(&w.v1)), &rules(&w.v1));
    let env = envelope(&w, &w.alice, &lie);
    // A host holding v1 recomputes the diff and refuses.
    assert_eq!(
        kinds(check(&w.trust, &env, replaced(&w))),
        vec!["diff_mismatch"]
    );
    // A fresh host cannot see the old side: an empty claimed list passes its checks — the
    // documented limit (the author signed the claim, and the audit record keeps it).
    assert!(check(&w.trust, &env, None).is_ok());
    // But a claim the new module contradicts (a flag retired that is still there) is caught.
    let mut retired = diff(Some(&rules(&w.v1)), &rules(&w.v2));
    retired.push(Change::FlagRetired {
        flag: flagforge_governance::FlagRef {
            key: "TaxCalculationMode".into(),
            kind: flagforge_protocol::FlagKind::Policy,
            owner: "finance-platform".into(),
        },
    });
    let mut env = envelope(&w, &w.alice, &retired);
    approve(&mut env, &w.bob);
    assert_eq!(kinds(check(&w.trust, &env, None)), vec!["diff_mismatch"]);
}

#[test]
fn an_envelope_without_a_change_list_or_from_an_unknown_author_is_refused() {
    let w = world();
    let mut env = envelope(&w, &w.alice, &[]);
    env.changes = None;
    assert_eq!(
        kinds(check(&w.trust, &env, replaced(&w))),
        vec!["ungoverned"]
    );
    let stranger = KeyPair::generate().unwrap();
    let changes = diff(Some(&rules(&w.v1)), &rules(&w.v2));
    let env = envelope(&w, &stranger, &changes);
    assert_eq!(
        kinds(check(&w.trust, &env, replaced(&w)))[0],
        "unknown_author"
    );
    // Bob may approve but not author.
    let env = envelope(&w, &w.bob, &changes);
    assert_eq!(
        kinds(check(&w.trust, &env, replaced(&w)))[0],
        "not_an_author"
    );
}

#[test]
fn trust_file_errors_are_located() {
    let key = KeyPair::generate().unwrap().public().to_text();
    let cases: Vec<(String, &str)> = vec![
        ("keys: [".into(), "trust.yaml:"),
        (
            format!("keys:\n  - identity: a\n    key: {key}\n    roles: [author, admin]\n    owners: [\"*\"]\n"),
            "trust.yaml:4:21: unknown role `admin` (roles: author, approver)",
        ),
        (
            "keys:\n  - identity: a\n    key: nonsense\n    roles: [author]\n    owners: [x]\n".into(),
            "trust.yaml:3:10: `key`:",
        ),
        (
            format!("keys:\n  - identity: a\n    key: {key}\n    roles: [author]\n    owners: [x]\napprovals:\n  polcy: 1\n"),
            "trust.yaml:7:3: unknown flag kind `polcy`",
        ),
        (
            format!("keys:\n  - identity: a\n    key: {key}\n    roles: [author]\n    owners: []\n"),
            "trust.yaml:5:13: key of `a` changes no owner's flags",
        ),
        (
            format!("keys:\n  - identity: a\n    key: {key}\n    roles: [author]\n    owners: [x]\n    colour: blue\n"),
            "trust.yaml:",
        ),
    ];
    for (text, expected) in cases {
        let e = Trust::parse("trust.yaml", &text).unwrap_err().to_string();
        assert!(
            e.starts_with(expected),
            "{e}\n  expected to start with {expected}"
        );
    }
}

#[test]
fn approvals_per_kind_are_configurable() {
    let key = KeyPair::generate().unwrap();
    let t = Trust::parse(
        "t",
        &format!(
            "keys:\n  - identity: a\n    key: {}\n    roles: [author]\n    owners: [\"*\"]\napprovals:\n  policy: 2\n  ops: 1\n",
            key.public().to_text()
        ),
    )
    .unwrap();
    use flagforge_protocol::FlagKind::*;
    assert_eq!(
        [Policy, Migration, Ops, Release, Experiment].map(|k| t.approvals_needed(k)),
        [2, 1, 1, 0, 0]
    );
}
