//! A new version of a ruleset compiles nothing: its code is the version before's, only the
//! rules data changed (`shared.rs`); and a module with other code still reuses the machine
//! code of the functions it shares (Cranelift's incremental cache). Counted, not timed.

use std::sync::atomic::Ordering;

use flagforge_protocol::{Context, Value};
use wasm_host::{CompiledFrom, Host, Limits};

use crate::guests::{self, Guest};

fn counts(host: &Host) -> (u64, u64) {
    let s = host.reuse_stats();
    (
        s.hits.load(Ordering::Relaxed),
        s.misses.load(Ordering::Relaxed),
    )
}

#[test]
fn a_second_version_compiles_nothing_and_answers_from_its_own_rules() {
    let v1 = flagforge_testkit::checkout_module(false);
    let v2 = flagforge_testkit::checkout_module(true);
    assert_ne!(v1, v2);
    let host = Host::new(Limits::default()).unwrap();

    let first = host.load(&v1).unwrap();
    assert_eq!(first.compiled_from(), &CompiledFrom::Compiled);
    let (hits, generated) = counts(&host);
    assert!(
        generated > 100,
        "the evaluator has hundreds of functions: {generated}"
    );

    // Same code, other data: the template compiled for v1 serves v2 (`shared.rs`).
    let second = host.load(&v2).unwrap();
    assert_eq!(second.compiled_from(), &CompiledFrom::Shared);
    assert_eq!(
        counts(&host),
        (hits, generated),
        "no function compiled for v2"
    );
    assert_eq!(first.cache_key(), second.cache_key());
    assert_ne!(first.sha256(), second.sha256());

    // Shared code, new rules: the two versions answer differently, and v2 answers exactly as
    // a host that compiled it alone.
    let alone = Host::new(Limits::default()).unwrap().load(&v2).unwrap();
    let flag = "FraudEngineRoutingMode";
    for market in ["FR", "IT", "DE", "ES"] {
        let mut ctx = Context::new();
        ctx.insert("market".into(), Value::from(market));
        ctx.insert("customer_id".into(), Value::String(format!("c-{market}")));
        assert_eq!(
            second.evaluate_all(&ctx, true),
            alone.evaluate_all(&ctx, true)
        );
        if market == "FR" {
            assert_ne!(
                first.evaluate(flag, &ctx, false).variant,
                second.evaluate(flag, &ctx, false).variant
            );
        }
    }
}

#[test]
fn a_module_with_other_code_reuses_the_compiled_functions_it_shares() {
    let host = Host::new(Limits::default()).unwrap();
    host.load(&guests::build(Guest::default())).unwrap();
    let (hits, generated) = counts(&host);
    // Another template (an extra global), the same functions.
    let other = host
        .load(&guests::build(Guest {
            extra: "(global $unused i32 (i32.const 7))",
            ..Guest::default()
        }))
        .unwrap();
    assert_eq!(other.compiled_from(), &CompiledFrom::Compiled);
    let (hits2, generated2) = counts(&host);
    let functions = hits + generated;
    let (reused, regenerated) = (hits2 - hits, generated2 - generated);
    println!("{reused} of {functions} functions reused, {regenerated} generated");
    assert!(
        reused * 100 >= functions * 80,
        "at least 80% of the functions reused: {reused} of {functions}"
    );
}

#[test]
fn hosts_do_not_share_reused_code() {
    let v1 = flagforge_testkit::checkout_module(false);
    let one = Host::new(Limits::default()).unwrap();
    one.load(&v1).unwrap();
    let other = Host::new(Limits::default()).unwrap();
    other.load(&v1).unwrap();
    let (_, generated) = counts(&other);
    assert!(
        generated > 100,
        "each engine keeps its own store: the second host generated the evaluator again ({generated})"
    );
}
