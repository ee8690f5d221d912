//! A guest that loops, grows memory, traps or lies about its buffers: the call answers the
//! flag's `on_error` variant with reason ERROR, the instance is discarded, and the next call
//! is answered normally.

use std::sync::atomic::Ordering;

use flagforge_protocol::{Context, ErrorCode, Reason, Value};
use wasm_host::{Host, Limits, LoadedModule};

use crate::guests::{self, Guest, BAD_PTR, GROW, LOOP, OK, TRAP};

fn hostile() -> LoadedModule {
    let limits = Limits {
        fuel_per_call: 2_000_000,
        memory_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    Host::new(limits)
        .unwrap()
        .load(&guests::build(Guest::default()))
        .unwrap()
}

fn assert_fallback(m: &LoadedModule, key: &str, message: &str) {
    let r = m.evaluate(key, &Context::new(), false);
    assert_eq!(r.reason, Reason::Error, "{key}: {r:?}");
    assert_eq!(r.error_code, Some(ErrorCode::General), "{key}");
    assert_eq!(r.variant.as_deref(), Some("safe"), "{key}");
    assert_eq!(r.value, Value::from("fallback"), "{key}");
    let msg = r.error_message.unwrap_or_default();
    assert!(msg.contains(message), "{key}: {msg}");
    // The next evaluation on the same module is answered normally.
    assert_eq!(
        m.evaluate(OK, &Context::new(), false),
        guests::canned(),
        "after {key}"
    );
}

#[test]
fn a_looping_guest_runs_out_of_fuel_and_serves_on_error() {
    let m = hostile();
    assert_fallback(&m, LOOP, "fuel");
    assert!(m.stats().discarded_instances.load(Ordering::Relaxed) >= 1);
}

#[test]
fn a_guest_growing_memory_without_bound_hits_the_cap() {
    let m = hostile();
    assert_fallback(&m, GROW, "out of memory");
}

#[test]
fn a_trapping_guest_serves_on_error() {
    assert_fallback(&hostile(), TRAP, "trapped");
}

#[test]
fn a_guest_returning_a_buffer_outside_memory_serves_on_error() {
    assert_fallback(&hostile(), BAD_PTR, "outside memory");
}

#[test]
fn repeated_traps_do_not_leak_instances_into_the_pool() {
    let m = hostile();
    // Loading asked each flag that reads nothing for its answer once (they trap, so nothing
    // was remembered): count from here.
    let before = m.stats().discarded_instances.load(Ordering::Relaxed);
    for _ in 0..5 {
        let _ = m.evaluate(TRAP, &Context::new(), false);
    }
    assert_eq!(
        m.stats().discarded_instances.load(Ordering::Relaxed) - before,
        5
    );
    assert_eq!(m.evaluate(OK, &Context::new(), false), guests::canned());
}

#[test]
fn many_threads_evaluate_the_real_module_concurrently() {
    let m = Host::new(Limits::default())
        .unwrap()
        .load(&guests::checkout())
        .unwrap();
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("IT"));
    let expected = m.evaluate("FraudEngineRoutingMode", &ctx, false);
    assert_eq!(expected.variant.as_deref(), Some("engine_v2"));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    assert_eq!(m.evaluate("FraudEngineRoutingMode", &ctx, false), expected);
                }
            });
        }
    });
    assert!(m.stats().instances_created.load(Ordering::Relaxed) <= 5);
}

/// Regression: the rules are decoded inside the module once per instance, and for a large
/// ruleset that took more than one evaluation's fuel, so the load (manifest) failed and every
/// fresh instance's first evaluation ran out of fuel. Instances are now readied under the
/// load budget (`Limits::fuel_per_load`).
#[test]
fn a_ten_thousand_flag_ruleset_loads_and_every_new_instance_answers() {
    let mut yaml = String::from("ruleset: big\ncontext: { market: string }\nflags:\n");
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  - {{ key: F{i}, kind: ops, owner: t, variants: {{ on: true, off: false }}, default: off, rules: [ {{ when: 'market == \"M{i}\"', serve: on }} ] }}\n"
        ));
    }
    let compiled = flagforge_compiler::compile_sources(&[flagforge_compiler::SourceFile {
        path: "big.yaml".into(),
        text: yaml,
    }])
    .unwrap();
    // No idle instance is kept: every call instantiates the module afresh.
    let module = Host::new(Limits {
        max_idle_instances: 0,
        ..Limits::default()
    })
    .unwrap()
    .load(&compiled.module)
    .unwrap();
    assert_eq!(module.manifest().flags.len(), 10_000);
    let mut ctx = flagforge_protocol::Context::new();
    ctx.insert("market".into(), flagforge_protocol::Value::from("M9999"));
    let created = || {
        module
            .stats()
            .instances_created
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = created();
    for flag in ["F9999", "F0", "F5000"] {
        let r = module.evaluate(flag, &ctx, false);
        let expected = if flag == "F9999" { "on" } else { "off" };
        assert_eq!(r.variant.as_deref(), Some(expected), "{r:?}");
    }
    assert_eq!(created() - before, 3, "each call ran on a new instance");
    // And several at once, from several threads.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let r = module.evaluate("F9999", &ctx, false);
                assert_eq!(r.variant.as_deref(), Some("on"), "{r:?}");
            });
        }
    });
    assert_eq!(created() - before, 7);
}

/// A module that cannot be readied within the load budget is refused, and the message names
/// that budget (not the per-call one).
#[test]
fn a_load_over_the_load_fuel_budget_names_that_budget() {
    let host = Host::new(Limits {
        fuel_per_load: 1_000,
        fuel_per_call: 123_456_789,
        ..Limits::default()
    })
    .unwrap();
    let Err(err) = host.load(&guests::checkout()) else {
        panic!("a module readied on 1,000 fuel")
    };
    assert_eq!(err.kind(), "unusable", "{err}");
    let msg = err.to_string();
    assert!(msg.contains("fuel budget of 1000"), "{msg}");
    assert!(!msg.contains("123456789"), "{msg}");
}
