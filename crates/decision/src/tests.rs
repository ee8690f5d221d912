//! Round trips, every refusal with its own reason, header size, and the lookup rules.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed assumption is a failed test"
)]

use super::*;
use flagforge_distribution::KeyPair;
use wasm_host::{Host, Limits};

const NOW: i64 = 1_795_000_000_000;

fn module(kill_switch_in_france: bool) -> LoadedModule {
    Host::new(Limits::default())
        .unwrap()
        .load(&flagforge_testkit::checkout_module(kill_switch_in_france))
        .unwrap()
}

fn ctx() -> Context {
    let mut c = Context::new();
    for (k, v) in [
        ("market", "FR"),
        ("tenant", "acme-fr"),
        ("customer_id", "c-1001"),
        ("now", "2026-12-10T09:00:00Z"),
    ] {
        c.insert(k.into(), Value::from(v));
    }
    c
}

const FLAGS: [&str; 3] = [
    "FraudEngineRoutingMode",
    "FulfillmentRoutingMode",
    "TaxCalculationMode",
];

#[test]
fn a_decision_context_round_trips_through_its_header() {
    let m = module(false);
    let key = KeyPair::generate().unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let d = decide(&m, Some(7), &FLAGS, &ctx(), "order-1", NOW, 60_000).unwrap();
    let header = d.encode(&key);
    let back = DecisionContext::verify(&header, &trusted, NOW + 1).unwrap();
    assert_eq!(back.correlation_id, "order-1");
    assert_eq!(back.key_id, key.public().id());
    assert_eq!(back.rulesets[0].sha256, m.sha256_hex());
    assert_eq!(back.rulesets[0].version, Some(7));
    for flag in FLAGS {
        let local = m.evaluate(flag, &ctx(), false);
        let c = &back.decisions[flag];
        assert_eq!(
            (&c.value, &c.variant, c.reason),
            (&local.value, &local.variant, local.reason)
        );
    }
}

#[test]
fn every_refusal_has_its_own_reason() {
    let m = module(false);
    let key = KeyPair::generate().unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let header = decide(&m, None, &FLAGS, &ctx(), "order-1", NOW, 60_000)
        .unwrap()
        .encode(&key);

    // Every single-byte change of the decoded bytes is refused (never accepted altered).
    let raw = URL_SAFE_NO_PAD.decode(&header).unwrap();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        let err =
            DecisionContext::verify(&URL_SAFE_NO_PAD.encode(&bad), &trusted, NOW).unwrap_err();
        assert!(
            matches!(
                err,
                DecisionError::BadSignature
                    | DecisionError::Malformed(_)
                    | DecisionError::UnknownKey(_)
                    | DecisionError::UnsupportedFormat(_)
            ),
            "byte {i}: {err}"
        );
    }
    let other = TrustedKeys::new([KeyPair::generate().unwrap().public()]);
    assert_eq!(
        DecisionContext::verify(&header, &other, NOW)
            .unwrap_err()
            .kind(),
        "unknown_key"
    );
    assert_eq!(
        DecisionContext::verify(&header, &trusted, NOW + 60_001)
            .unwrap_err()
            .kind(),
        "expired"
    );
    assert_eq!(
        DecisionContext::verify("not*base64", &trusted, NOW)
            .unwrap_err()
            .kind(),
        "malformed"
    );
    // A forger who re-signs with its own key but claims the trusted key id.
    let forger = KeyPair::generate().unwrap();
    let forged = decide(&m, None, &FLAGS, &ctx(), "order-1", NOW, 60_000)
        .unwrap()
        .encode(&forger);
    let Wire(f, _, payload, sig) =
        rmp_serde::from_slice(&URL_SAFE_NO_PAD.decode(&forged).unwrap()).unwrap();
    let claimed = URL_SAFE_NO_PAD
        .encode(rmp_serde::to_vec(&Wire(f, key.public().id().to_owned(), payload, sig)).unwrap());
    assert_eq!(
        DecisionContext::verify(&claimed, &trusted, NOW)
            .unwrap_err()
            .kind(),
        "bad_signature"
    );
    // Key rotation: a verifier trusting old and new keys accepts both.
    let next = KeyPair::generate().unwrap();
    let both = TrustedKeys::new([key.public(), next.public()]);
    let rotated = decide(&m, None, &FLAGS, &ctx(), "order-2", NOW, 60_000)
        .unwrap()
        .encode(&next);
    assert!(DecisionContext::verify(&header, &both, NOW).is_ok());
    assert!(DecisionContext::verify(&rotated, &both, NOW).is_ok());
}

#[test]
fn ten_flags_fit_in_two_kilobytes() {
    // The checkout ruleset has 9 flags; a second ruleset reference and one more decision
    // make ten, with realistic values (the entitlement map is the largest).
    let m = module(false);
    let key = KeyPair::generate().unwrap();
    let all: Vec<String> = m.manifest().flags.iter().map(|f| f.key.clone()).collect();
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut d = decide(
        &m,
        Some(12),
        &refs,
        &ctx(),
        "order-2026-11-25-000042",
        NOW,
        300_000,
    )
    .unwrap();
    d.rulesets.push(RulesetRef {
        name: "payments".into(),
        version: Some(3),
        sha256: "ab".repeat(32),
    });
    for (i, flag) in ["PaymentProviderRouting"].iter().enumerate() {
        d.decisions.insert(
            (*flag).to_owned(),
            Carried {
                ruleset: 1,
                value: Value::String(format!("provider_{i}_eu_west")),
                variant: Some(format!("provider_{i}")),
                reason: Reason::TargetingMatch,
            },
        );
    }
    assert_eq!(d.decisions.len(), 10);
    let header = d.encode(&key);
    eprintln!("10 flags: {} bytes", header.len());
    assert!(header.len() <= 2048, "{} bytes", header.len());
}

#[test]
fn carried_answers_win_and_differences_are_counted() {
    let (old, new) = (module(false), module(true));
    let key = KeyPair::generate().unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    // Decided at the edge on the old module: the v3 fraud engine in France.
    let header = decide(
        &old,
        Some(1),
        &["FraudEngineRoutingMode"],
        &ctx(),
        "o-1",
        NOW,
        60_000,
    )
    .unwrap()
    .encode(&key);
    // Downstream already has the new module (kill switch on).
    let mismatches = Mismatches::default();
    let lookup = Lookup::new(&new, Some(&header), &trusted, NOW, &mismatches, true);
    let r = lookup.resolve("FraudEngineRoutingMode", &ctx());
    assert_eq!(r.source, Source::Carried);
    assert_eq!(r.resolution.variant.as_deref(), Some("engine_v3"));
    assert_eq!(r.resolution.reason, Reason::Cached);
    assert_eq!(mismatches.count("FraudEngineRoutingMode"), 1);
    // Not carried: evaluated here.
    let local = lookup.resolve("TaxCalculationMode", &ctx());
    assert_eq!(local.source, Source::Local);
    // No context: everything local.
    let none = Lookup::new(&new, None, &trusted, NOW, &mismatches, true);
    assert_eq!(
        none.resolve("FraudEngineRoutingMode", &ctx())
            .resolution
            .variant
            .as_deref(),
        Some("engine_v2")
    );
    // A rejected context: the flag's failure policy, with the reason.
    let expired = Lookup::new(
        &new,
        Some(&header),
        &trusted,
        NOW + 60_001,
        &mismatches,
        true,
    );
    let r = expired.resolve("FraudEngineRoutingMode", &ctx());
    assert_eq!(r.source, Source::Rejected("expired"));
    assert_eq!(r.resolution.reason, Reason::Error);
    assert_eq!(
        r.resolution.variant.as_deref(),
        Some("engine_v2"),
        "on_error variant"
    );
    assert_eq!(mismatches.count("FraudEngineRoutingMode"), 1);
}

#[test]
fn a_context_bound_to_its_subject_is_refused_for_another_customer() {
    let m = module(false);
    let key = KeyPair::generate().unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let mut d = decide(
        &m,
        Some(1),
        &["FraudEngineRoutingMode"],
        &ctx(),
        "o-1",
        NOW,
        60_000,
    )
    .unwrap();
    d.subject = Subject::of("customer_id", &ctx());
    assert!(d.subject.is_some());
    let header = d.encode(&key);
    let back = DecisionContext::verify(&header, &trusted, NOW).unwrap();
    assert_eq!(back.subject, d.subject, "the binding is carried and signed");
    let mismatches = Mismatches::default();
    let lookup = Lookup::new(&m, Some(&header), &trusted, NOW, &mismatches, true);
    // The customer it was decided for gets the carried answer.
    let same = lookup.resolve("FraudEngineRoutingMode", &ctx());
    assert_eq!(same.source, Source::Carried);
    // Another customer, or a request without the attribute, is refused.
    let mut other = ctx();
    other.insert("customer_id".into(), Value::from("c-someone-else"));
    let mut missing = ctx();
    missing.remove("customer_id");
    for c in [other, missing] {
        let r = lookup.resolve("FraudEngineRoutingMode", &c);
        assert_eq!(r.source, Source::Rejected("subject_mismatch"));
        assert_eq!(r.resolution.reason, Reason::Error);
    }
    // An unbound context (the default) still travels across customers, as before.
    let unbound = decide(
        &m,
        None,
        &["FraudEngineRoutingMode"],
        &ctx(),
        "o-2",
        NOW,
        60_000,
    )
    .unwrap()
    .encode(&key);
    let lookup = Lookup::new(&m, Some(&unbound), &trusted, NOW, &mismatches, true);
    let mut other = ctx();
    other.insert("customer_id".into(), Value::from("c-someone-else"));
    assert_eq!(
        lookup.resolve("FraudEngineRoutingMode", &other).source,
        Source::Carried
    );
}
