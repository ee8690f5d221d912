//! Host memory with 1, 10 and 100 rulesets loaded (a bench binary: resident set size from
//! `/proc/self/status`, Linux only). Each ruleset is the checkout example under its own name
//! (so its own module hash and its own compiled code), loaded and asked one flag, so it holds
//! one ready instance as a serving host would. The first row includes what the first compile
//! sets up once (compiler threads and arenas); the last column is the cost of one more ruleset.
//!
//! `cargo bench -p flagforge-benches --bench memory`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use flagforge_protocol::{Context, Value};
use wasm_host::{Host, Limits, LoadedModule};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .expect("VmRSS in /proc/self/status (Linux)")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` asks every bench for its names; this one has one.
        println!("memory: bench");
        return;
    }
    let dir = rules_examples::dir("checkout");
    // Compile every variant first, so compiler allocations are not counted.
    let modules: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            flagforge_compiler::compile_path_edited(&dir, |_, text| {
                text.replace("ruleset: checkout", &format!("ruleset: checkout-{i:03}"))
            })
            .expect("compile")
            .module
        })
        .collect();
    assert_ne!(
        modules[0], modules[1],
        "each ruleset must be its own module"
    );
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("FR"));
    let host = Host::new(Limits::default()).expect("host");
    let base = rss_kib();
    let mut loaded: Vec<LoadedModule> = Vec::new();
    println!(
        "module {} bytes; baseline RSS {base} KiB (engine, compiled inputs)",
        modules[0].len()
    );
    println!(
        "{:>9} {:>12} {:>14} {:>30}",
        "rulesets", "RSS delta", "per ruleset", "each added since the row above"
    );
    let mut previous = (0usize, 0u64);
    for target in [1usize, 10, 100] {
        while loaded.len() < target {
            let m = host.load(&modules[loaded.len()]).expect("load");
            m.evaluate("FraudEngineRoutingMode", &ctx, false);
            loaded.push(m);
        }
        let delta = rss_kib().saturating_sub(base);
        println!(
            "{target:>9} {:>8.1} MiB {:>10.0} KiB {:>26.0} KiB",
            delta as f64 / 1024.0,
            delta as f64 / target as f64,
            delta.saturating_sub(previous.1) as f64 / (target - previous.0) as f64
        );
        previous = (target, delta);
    }
}
