//! The same module and contexts on every host: wasmtime (`wasm-host`), Node and headless
//! Chromium (the npm package of `bindings`), timed with one method (warm-up, then the median of
//! 5 batches of ~100 ms) in one run, and printed as ns/op with the ratio to wasmtime.
//!
//! `cargo bench -p flagforge-benches --bench hosts` (needs `scripts/build-bindings.sh` and
//! `npm ci` in `bindings/tests` first; `scripts/bench-hosts.sh` does all three). Under
//! `cargo test` it only checks that the Rust side runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use flagforge_protocol::value::encode_context;
use flagforge_protocol::{Context, Value};
use wasm_host::{Host, Limits};

const FLAGS: &[&str] = &[
    "FulfillmentRoutingMode",
    "PremiumEntitlementRule",
    "FraudEngineRoutingMode",
];

fn time(full: bool, mut op: impl FnMut()) -> f64 {
    for _ in 0..2000 {
        op();
    }
    let mut n: u64 = 1000;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            op();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if ms > 50.0 || !full {
            n = ((n as f64 * 100.0 / ms.max(1e-3)).round() as u64).max(1);
            break;
        }
        n *= 4;
    }
    if !full {
        n = n.min(100);
    }
    let mut batches: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                op();
            }
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[2]
}

fn node(script: &str, dir: &Path) -> Option<BTreeMap<String, f64>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("node")
        .arg(root.join("bindings/tests/bench").join(script))
        .arg(dir)
        .current_dir(&root)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{script}: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let compiled =
        flagforge_compiler::compile_path(&rules_examples::dir("checkout")).expect("compile");
    let contexts: Vec<Context> =
        flagforge_compiler::load_cases(&rules_examples::dir("checkout"), "demo")
            .expect("demo scenarios")
            .into_iter()
            .map(|c| c.context)
            .collect();
    let module = Host::new(Limits::default())
        .expect("engine")
        .load(&compiled.module)
        .expect("module");

    let mut wasmtime = BTreeMap::new();
    let encoded: Vec<Vec<u8>> = contexts
        .iter()
        .map(|c| encode_context(c).expect("encode"))
        .collect();
    for flag in FLAGS {
        let mut i = 0;
        wasmtime.insert(
            format!("one:{flag}"),
            time(full, || {
                black_box(module.evaluate(flag, &contexts[i % contexts.len()], false));
                i += 1;
            }),
        );
        let mut j = 0;
        wasmtime.insert(
            format!("one-bytes:{flag}"),
            time(full, || {
                black_box(module.evaluate_canonical(flag, &encoded[j % encoded.len()], false));
                j += 1;
            }),
        );
    }
    let mut k = 0;
    wasmtime.insert(
        "all".to_owned(),
        time(full, || {
            black_box(module.evaluate_all(&contexts[k % contexts.len()], false));
            k += 1;
        }),
    );
    if !full {
        eprintln!("hosts bench: Rust side ran (JS hosts run under `cargo bench` only)");
        return;
    }

    // The same module bytes and contexts for the JavaScript hosts.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-hosts");
    std::fs::create_dir_all(&dir).expect("bench dir");
    std::fs::write(dir.join("checkout.wasm"), &compiled.module).expect("write module");
    let data = serde_json::json!({
        "flags": FLAGS,
        "contexts": contexts.iter().map(|c| Value::Map(c.clone()).to_json()).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("bench.json"), data.to_string()).expect("write data");
    let hosts = [
        ("wasmtime", Some(wasmtime)),
        ("node", node("node.js", &dir)),
        ("chromium", node("chromium.js", &dir)),
    ];

    println!(
        "\nsame module ({} bytes) and {} contexts on every host; median ns/op, ratio to wasmtime\n",
        compiled.module.len(),
        contexts.len()
    );
    println!("| measure | wasmtime ns | node ns (×) | chromium ns (×) |");
    println!("|---|---:|---:|---:|");
    let base = hosts[0].1.clone().unwrap_or_default();
    for (measure, w) in &base {
        let cell = |h: &Option<BTreeMap<String, f64>>| match h.as_ref().and_then(|m| m.get(measure))
        {
            Some(v) => format!("{v:.0} ({:.2}×)", v / w),
            None => "n/a".into(),
        };
        println!(
            "| {measure} | {w:.0} | {} | {} |",
            cell(&hosts[1].1),
            cell(&hosts[2].1)
        );
    }
}
