//! Cold start: snapshot directory → first answer, compiling the module vs loading its native
//! code from the compiled-module cache (criterion, side by side in one run). Also the load
//! step alone (`Host::load`: compile or cache, instantiate, read the manifest), and a new
//! version of a ruleset on a host that has compiled the evaluator before (function reuse).
//!
//! `cargo bench -p flagforge-benches --bench coldstart`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use flagforge_distribution::{Draft, Envelope, KeyPair, SnapshotDir, TrustedKeys};
use flagforge_protocol::{Context, Value};
use wasm_host::{CompiledFrom, Host, Limits};

fn host(cache: Option<&Path>) -> Host {
    let host = Host::new(Limits::default()).expect("host");
    match cache {
        Some(dir) => host.with_compiled_cache(dir).expect("cache"),
        None => host,
    }
}

/// What a restarted service does before its first request: read and verify the snapshot,
/// load the module, answer one flag.
fn first_answer(
    snapshots: &SnapshotDir,
    trusted: &TrustedKeys,
    host: &Host,
    ctx: &Context,
) -> String {
    let loaded = snapshots.load(trusted).expect("snapshots");
    let env = loaded.envelopes.first().expect("one snapshot");
    let module = host.load(&env.module).expect("module");
    module.evaluate("FraudEngineRoutingMode", ctx, false).key
}

fn coldstart(c: &mut Criterion) {
    let module = flagforge_compiler::compile_path(&rules_examples::dir("checkout"))
        .expect("compile")
        .module;
    let key = KeyPair::generate().expect("key");
    let trusted = TrustedKeys::new([key.public()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshots = SnapshotDir::open(&dir.path().join("snapshots")).expect("snapshot dir");
    snapshots
        .store(&Envelope::sign(
            Draft {
                ruleset: "checkout".into(),
                version: 1,
                module: module.clone(),
                created_at: "2026-11-25T00:00:00Z".into(),
                ..Draft::default()
            },
            &key,
        ))
        .expect("store");
    let cache_dir = dir.path().join("snapshots/compiled");
    // Fill the cache once, and check the cached runs below really hit it.
    host(Some(&cache_dir)).load(&module).expect("warm");
    assert_eq!(
        host(Some(&cache_dir))
            .load(&module)
            .expect("cached")
            .compiled_from(),
        &CompiledFrom::Cache
    );
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("FR"));
    println!("module {} bytes", module.len());

    let mut g = c.benchmark_group("coldstart");
    g.sample_size(20);
    // A fresh `Host` per iteration: a restarted process has no engine state to reuse.
    g.bench_function("load/compile", |b| {
        b.iter(|| black_box(host(None).load(&module).expect("load")))
    });
    g.bench_function("load/cached", |b| {
        b.iter(|| black_box(host(Some(&cache_dir)).load(&module).expect("load")))
    });
    // A running host receiving new versions: each load is a module it has not loaded in this
    // form before only in its rules data (v1 and v2 alternate; nothing comes from the
    // compiled-module cache, which is keyed by the whole module).
    let versions = [
        flagforge_testkit::checkout_module(false),
        flagforge_testkit::checkout_module(true),
    ];
    let running = host(None);
    for v in &versions {
        running.load(v).expect("warm");
    }
    let mut next = 0usize;
    g.bench_function("load/new_version", |b| {
        b.iter(|| {
            next += 1;
            black_box(running.load(&versions[next % 2]).expect("load"))
        })
    });
    let s = running.reuse_stats();
    println!(
        "function reuse over the run: {} reused, {} generated",
        s.hits.load(std::sync::atomic::Ordering::Relaxed),
        s.misses.load(std::sync::atomic::Ordering::Relaxed)
    );
    g.bench_function("snapshot_to_first_answer/compile", |b| {
        b.iter(|| black_box(first_answer(&snapshots, &trusted, &host(None), &ctx)))
    });
    g.bench_function("snapshot_to_first_answer/cached", |b| {
        b.iter(|| {
            black_box(first_answer(
                &snapshots,
                &trusted,
                &host(Some(&cache_dir)),
                &ctx,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, coldstart);
criterion_main!(benches);
