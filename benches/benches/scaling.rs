//! How evaluation cost grows, on generated rulesets (criterion; `scripts/plot-scaling.py`
//! turns `target/criterion` into the PNGs next to BENCHMARKS.md):
//! - `flags`: flags per ruleset 10 → 10,000, evaluating one flag;
//! - `rules`: rules per flag 1 → 1,000, the last rule matching (worst case);
//! - `members`: member-segment size 10 → 100,000, a miss (worst case of the binary search);
//! - `attributes`: context attributes 5 → 1,000 with the rules reading 3;
//! - `threads`: 1 vs 2 threads evaluating (throughput, one module shared).
//!
//! Each size is measured natively (evaluator-core) and in wasmtime, in the same run.
//! `cargo bench -p flagforge-benches --bench scaling`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use evaluator_core::{Options, Ruleset};
use flagforge_compiler::{compile_sources, SourceFile};
use flagforge_protocol::{Context, Value};
use wasm_host::{Host, Limits, LoadedModule};

fn build(yaml: String) -> (Ruleset, LoadedModule) {
    let compiled = compile_sources(&[SourceFile {
        path: "generated.yaml".into(),
        text: yaml,
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let native = Ruleset::decode(&compiled.rules).expect("rules");
    let module = Host::new(Limits::default())
        .expect("host")
        .load(&compiled.module)
        .expect("module");
    (native, module)
}

fn flags_yaml(n: usize) -> String {
    let mut y = String::from("ruleset: gen\ncontext: { market: string }\nflags:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - {{ key: F{i}, kind: ops, owner: t, variants: {{ on: true, off: false }}, default: off, rules: [ {{ when: 'market == \"M{i}\"', serve: on }} ] }}\n"
        ));
    }
    y
}

fn rules_yaml(n: usize) -> String {
    let mut y = String::from("ruleset: gen\ncontext: { n: int }\nflags:\n  - key: F\n    kind: ops\n    owner: t\n    variants: { on: true, off: false }\n    default: off\n    rules:\n");
    for i in 0..n {
        y.push_str(&format!("      - {{ when: 'n == {i}', serve: on }}\n"));
    }
    y
}

fn members_yaml(n: usize) -> String {
    let members: Vec<String> = (0..n).map(|i| format!("tenant-{i:06}")).collect();
    format!(
        "ruleset: gen\ncontext: {{ tenant: string }}\nsegments:\n  big: {{ members: [{}] }}\nflags:\n  - {{ key: F, kind: ops, owner: t, variants: {{ on: true, off: false }}, default: off, rules: [ {{ when: 'tenant in segment(\"big\")', serve: on }} ] }}\n",
        members.join(", ")
    )
}

fn attributes_yaml(n: usize) -> String {
    let mut y = String::from("ruleset: gen\ncontext:\n");
    for i in 0..n {
        y.push_str(&format!("  a{i:04}: string\n"));
    }
    y.push_str("flags:\n  - { key: F, kind: ops, owner: t, variants: { on: true, off: false }, default: off, rules: [ { when: 'a0000 == \"x\" && a0001 == \"y\" && a0002 != \"z\"', serve: on } ] }\n");
    y
}

fn ctx(pairs: &[(&str, Value)]) -> Context {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn pair(
    c: &mut Criterion,
    group: &str,
    size: usize,
    native: &Ruleset,
    module: &LoadedModule,
    flag: &str,
    context: &Context,
) {
    assert_eq!(
        native.evaluate(flag, context, Options::default()),
        module.evaluate(flag, context, false),
        "{group}/{size}: engines disagree"
    );
    let mut g = c.benchmark_group(group);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g.bench_with_input(BenchmarkId::new("native", size), &size, |b, _| {
        b.iter(|| black_box(native.evaluate(flag, context, Options::default())))
    });
    g.bench_with_input(BenchmarkId::new("wasmtime", size), &size, |b, _| {
        b.iter(|| black_box(module.evaluate(flag, context, false)))
    });
    g.finish();
}

fn scaling(c: &mut Criterion) {
    for n in [10, 100, 1_000, 10_000] {
        let (native, module) = build(flags_yaml(n));
        let last = format!("F{}", n - 1);
        let context = ctx(&[("market", Value::from(format!("M{}", n - 1).as_str()))]);
        pair(c, "flags", n, &native, &module, &last, &context);
    }
    for n in [1, 10, 100, 1_000] {
        let (native, module) = build(rules_yaml(n));
        let context = ctx(&[("n", Value::Int(n as i64 - 1))]);
        pair(c, "rules", n, &native, &module, "F", &context);
    }
    for n in [10, 1_000, 100_000] {
        let (native, module) = build(members_yaml(n));
        let context = ctx(&[("tenant", Value::from("not-a-member"))]);
        pair(c, "members", n, &native, &module, "F", &context);
    }
    for n in [5, 50, 1_000] {
        let (native, module) = build(attributes_yaml(n));
        let context: Context = (0..n)
            .map(|i| (format!("a{i:04}"), Value::from(["x", "y", "w"][i.min(2)])))
            .collect();
        pair(c, "attributes", n, &native, &module, "F", &context);
    }
    // Throughput with 1 and 2 threads sharing one loaded module, beside the same work natively
    // (evaluator-core shares nothing between threads): what two threads can gain on this
    // machine at all.
    let (native, module) = build(flags_yaml(10));
    let module = Arc::new(module);
    let context = ctx(&[("market", Value::from("M3"))]);
    let mut g = c.benchmark_group("threads");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    const PER_THREAD: u64 = 20_000;
    let native_once = || black_box(native.evaluate("F3", &context, Options::default()));
    let wasm_once = || black_box(module.evaluate("F3", &context, false));
    assert_eq!(native_once(), wasm_once(), "threads: engines disagree");
    for threads in [1u64, 2] {
        g.throughput(Throughput::Elements(PER_THREAD * threads));
        for (name, once) in [
            ("native", &native_once as &(dyn Fn() -> _ + Sync)),
            ("wasmtime", &wasm_once),
        ] {
            g.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        std::thread::scope(|s| {
                            for _ in 0..t {
                                s.spawn(|| {
                                    for _ in 0..PER_THREAD {
                                        once();
                                    }
                                });
                            }
                        });
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, scaling);
criterion_main!(benches);
