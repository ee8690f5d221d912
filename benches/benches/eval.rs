//! One flag and all flags of rules-examples: native evaluator-core vs the module in wasmtime.
//!
//! Three paths, all starting from the same `Context` value and ending with a `Resolution`:
//! - `native`: evaluator-core's `Ruleset::evaluate(&Context)` — the reference;
//! - `native_bytes`: the same marshalling the module does (canonical MessagePack context in,
//!   MessagePack result out, decoded) but run natively — isolates the sandbox's own cost;
//! - `wasmtime`: `LoadedModule::evaluate` — sandbox plus marshalling.
//!
//! Run: `cargo bench -p flagforge-benches --bench eval`, then `python3 scripts/bench-ratios.py`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use evaluator_core::{Options, Ruleset};
use flagforge_protocol::{Context, Resolution};
use flagforge_runtime::Runtime;
use wasm_host::{Host, Limits};

/// Flags measured one at a time: a rollout, a segment lookup with semver, a plain comparison.
const ONE_FLAG: &[&str] = &[
    "FulfillmentRoutingMode",
    "PremiumEntitlementRule",
    "FraudEngineRoutingMode",
];

fn contexts() -> Vec<Context> {
    let dir = rules_examples::dir("checkout");
    flagforge_compiler::load_cases(&dir, "demo")
        .expect("demo scenarios")
        .into_iter()
        .map(|c| c.context)
        .collect()
}

/// The native evaluator behind the host runtime: the positional context a host sends, one
/// result record, expanded from the manifest (the module's path, without the sandbox).
fn native_bytes(native: &Ruleset, runtime: &Runtime, flag: &str, ctx: &Context) -> Resolution {
    runtime.answer(flag, runtime.prepare(flag, ctx, false), |i, context| {
        let mut out = Vec::with_capacity(64);
        native.evaluate_record(i, context, 0, &mut out);
        runtime.finish(i, &out)
    })
}

fn bench(c: &mut Criterion) {
    let compiled =
        flagforge_compiler::compile_path(&rules_examples::dir("checkout")).expect("compile");
    let native = Ruleset::decode(&compiled.rules).expect("rules");
    let runtime = Runtime::new(native.manifest(), usize::MAX);
    let wasm = Host::new(Limits::default())
        .expect("engine")
        .load(&compiled.module)
        .expect("module");
    let ctxs = contexts();
    // The paths must answer identically before anything is timed.
    for ctx in &ctxs {
        assert_eq!(
            native.evaluate_all(ctx, Options::default()),
            wasm.evaluate_all(ctx, false)
        );
        for flag in ONE_FLAG {
            assert_eq!(
                native_bytes(&native, &runtime, flag, ctx),
                wasm.evaluate(flag, ctx, false)
            );
        }
    }

    for flag in ONE_FLAG {
        let mut g = c.benchmark_group(format!("one_flag/{flag}"));
        g.bench_function("native", |b| {
            b.iter(|| {
                for ctx in &ctxs {
                    black_box(native.evaluate(black_box(flag), black_box(ctx), Options::default()));
                }
            })
        });
        g.bench_function("native_bytes", |b| {
            b.iter(|| {
                for ctx in &ctxs {
                    black_box(native_bytes(
                        &native,
                        &runtime,
                        black_box(flag),
                        black_box(ctx),
                    ));
                }
            })
        });
        g.bench_function("wasmtime", |b| {
            b.iter(|| {
                for ctx in &ctxs {
                    black_box(wasm.evaluate(black_box(flag), black_box(ctx), false));
                }
            })
        });
        g.finish();
    }

    let mut g = c.benchmark_group("all_flags");
    g.bench_function("native", |b| {
        b.iter(|| {
            for ctx in &ctxs {
                black_box(native.evaluate_all(black_box(ctx), Options::default()));
            }
        })
    });
    g.bench_function("wasmtime", |b| {
        b.iter(|| {
            for ctx in &ctxs {
                black_box(wasm.evaluate_all(black_box(ctx), false));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(60)
        .measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
