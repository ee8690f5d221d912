//! Decision context cost per request: signing and encoding a 10-flag context at the edge, and
//! decoding and verifying it downstream (criterion). Also prints the header size.
//!
//! `cargo bench -p flagforge-benches --bench decision`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flagforge_decision::{Carried, DecisionContext, RulesetRef};
use flagforge_distribution::{KeyPair, TrustedKeys};
use flagforge_protocol::{Reason, Value};

fn ten_flags() -> DecisionContext {
    let mut decisions = BTreeMap::new();
    for i in 0..10 {
        decisions.insert(
            format!("CheckoutPolicyFlagNumber{i:02}"),
            Carried {
                ruleset: i % 2,
                value: Value::String(format!("variant_value_{i}")),
                variant: Some(format!("variant_{i}")),
                reason: Reason::TargetingMatch,
            },
        );
    }
    DecisionContext {
        correlation_id: "order-2026-11-25-000042".into(),
        decided_at_ms: 1_795_000_000_000,
        expires_at_ms: 1_795_000_900_000,
        key_id: String::new(),
        rulesets: vec![
            RulesetRef {
                name: "checkout".into(),
                version: Some(12),
                sha256: "ab".repeat(32),
            },
            RulesetRef {
                name: "payments".into(),
                version: Some(3),
                sha256: "cd".repeat(32),
            },
        ],
        decisions,
        subject: None,
    }
}

fn bench(c: &mut Criterion) {
    let key = KeyPair::generate().expect("key");
    let trusted = TrustedKeys::new([key.public()]);
    let d = ten_flags();
    let header = d.encode(&key);
    println!("decision context with 10 flags: {} bytes", header.len());
    assert!(DecisionContext::verify(&header, &trusted, 1_795_000_000_001).is_ok());
    let mut g = c.benchmark_group("decision");
    g.bench_function("encode_and_sign_10_flags", |b| {
        b.iter(|| black_box(d.encode(&key)))
    });
    g.bench_function("decode_and_verify_10_flags", |b| {
        b.iter(|| {
            black_box(DecisionContext::verify(
                &header,
                &trusted,
                1_795_000_000_001,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
