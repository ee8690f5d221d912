//! A new version of a ruleset compiles from the machine code of the version before: the
//! evaluator's functions are identical, only the rules data changed. Counted, not timed.

use std::sync::atomic::Ordering;

use flagforge_protocol::{Context, Value};
use wasm_host::{Host, Limits};

fn counts(host: &Host) -> (u64, u64) {
    let s = host.reuse_stats();
    (
        s.hits.load(Ordering::Relaxed),
        s.misses.load(Ordering::Relaxed),
    )
}

#[test]
fn a_second_version_compiles_from_reused_code_and_answers_from_its_own_rules() {
    let v1 = flagforge_testkit::checkout_module(false);
    let v2 = flagforge_testkit::checkout_module(true);
    assert_ne!(v1, v2);
    let host = Host::new(Limits::default()).unwrap();

    let first = host.load(&v1).unwrap();
    // A fresh engine still reuses within one module (identical small functions).
    let (hits, generated) = counts(&host);
    let functions = hits + generated;
    assert!(
        generated > 100,
        "the evaluator has hundreds of functions: {generated}"
    );

    let second = host.load(&v2).unwrap();
    let (hits2, generated2) = counts(&host);
    let (reused, regenerated) = (hits2 - hits, generated2 - generated);
    assert_eq!(reused + regenerated, functions, "same functions in both");
    // Cranelift's key for a few functions depends on state its reused compile contexts carry
    // from the function compiled before (measured: 2-17% regenerated, varying run to run; the
    // same module compiled twice shows the same). All the rest is reused.
    println!("v2: {reused} of {functions} functions reused, {regenerated} generated");
    assert!(
        reused * 100 >= functions * 80,
        "at least 80% of v2's functions reused: {reused} of {functions}"
    );

    // Reused code, new rules: the two versions still answer differently.
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("FR"));
    let flag = "FraudEngineRoutingMode";
    assert_ne!(
        first.evaluate(flag, &ctx, false).variant,
        second.evaluate(flag, &ctx, false).variant
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
