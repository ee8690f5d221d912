//! `flagforge bench`: what evaluation costs for the user's own ruleset — ns per evaluation
//! natively (evaluator-core in this process) and in wasmtime, one flag and all flags, the
//! ratio, and how long the module takes to compile and load.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};
use evaluator_core::{Options, Ruleset};
use flagforge_protocol::Context;
use serde_json::{json, Value as Json};
use wasm_host::{Host, Limits};

use crate::{parse_context, with_now};

/// Median ns per call of `op`: warm-up, a batch sized to ~`batch_ms`, then 5 batches.
fn time(batch_ms: f64, mut op: impl FnMut()) -> f64 {
    for _ in 0..500 {
        op();
    }
    let mut n: u64 = 100;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            op();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if ms > batch_ms / 2.0 {
            n = ((n as f64 * batch_ms / ms).round() as u64).max(1);
            break;
        }
        n *= 4;
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

fn default_context(path: &Path) -> Context {
    if !path.is_dir() {
        return Context::new();
    }
    for sub in ["demo", "tests"] {
        if let Ok(cases) = flagforge_compiler::load_cases(path, sub) {
            if let Some(c) = cases.into_iter().next() {
                return c.context;
            }
        }
    }
    Context::new()
}

/// Runs the measurements; returns the report as JSON.
pub fn run(path: &Path, context: Option<&str>, flag: Option<&str>) -> Result<Json> {
    let t = Instant::now();
    let (module_bytes, rules, compile_ms) =
        if path.is_dir() || path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let c = flagforge_compiler::compile_path(path).map_err(|e| anyhow!("{e}"))?;
            (c.module, c.rules, Some(t.elapsed().as_secs_f64() * 1e3))
        } else {
            let bytes = crate::read_module(path)?;
            let rules = flagforge_governance::module_rules_bytes(&bytes)?;
            (bytes, rules, None)
        };
    let host = Host::new(Limits::default())?;
    let t = Instant::now();
    let module = host.load(&module_bytes)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let native = Ruleset::decode(&rules).map_err(|e| anyhow!("{e}"))?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut ctx = match context {
        Some(c) => parse_context(c)?,
        None => default_context(path),
    };
    with_now(module.manifest(), &mut ctx, None)?;
    let flags: Vec<String> = match flag {
        Some(f) => {
            if module.manifest().flag(f).is_none() {
                anyhow::bail!(
                    "flag `{f}` is not defined in ruleset `{}`",
                    module.manifest().ruleset
                );
            }
            vec![f.to_owned()]
        }
        None => module
            .manifest()
            .flags
            .iter()
            .map(|f| f.key.clone())
            .collect(),
    };
    // Both engines must agree before anything is timed.
    for f in &flags {
        let (n, w) = (
            native.evaluate(f, &ctx, Options::default()),
            module.evaluate(f, &ctx, false),
        );
        if n != w {
            anyhow::bail!("native and wasmtime disagree on {f}: {n:?} vs {w:?}");
        }
    }
    let batch = 40.0;
    let mut rows = Vec::new();
    for f in &flags {
        let n = time(batch, || {
            black_box(native.evaluate(f, &ctx, Options::default()));
        });
        let w = time(batch, || {
            black_box(module.evaluate(f, &ctx, false));
        });
        rows.push(json!({ "flag": f, "native_ns": n.round(), "wasmtime_ns": w.round(), "ratio": (w / n * 100.0).round() / 100.0 }));
    }
    let n_all = time(batch, || {
        black_box(native.evaluate_all(&ctx, Options::default()));
    });
    let w_all = time(batch, || {
        black_box(module.evaluate_all(&ctx, false));
    });
    Ok(json!({
        "ruleset": module.manifest().ruleset,
        "module_bytes": module_bytes.len(),
        "flags": rows,
        "all_flags": { "count": module.manifest().flags.len(), "native_ns": n_all.round(), "wasmtime_ns": w_all.round(), "ratio": (w_all / n_all * 100.0).round() / 100.0 },
        "compile_ms": compile_ms.map(|m| (m * 10.0).round() / 10.0),
        "wasmtime_load_ms": (load_ms * 10.0).round() / 10.0,
        "native_decode_ms": (decode_ms * 100.0).round() / 100.0,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    }))
}

fn num(v: &Json) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The report as a table.
#[must_use]
pub fn table(r: &Json) -> String {
    let mut out = format!(
        "ruleset {} ({} bytes), {} build; median of 5 batches per figure\n\n{:<34} {:>12} {:>12} {:>7}\n",
        r["ruleset"].as_str().unwrap_or(""),
        r["module_bytes"],
        r["build"].as_str().unwrap_or(""),
        "flag",
        "native ns",
        "wasmtime ns",
        "ratio"
    );
    for f in r["flags"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<34} {:>12.0} {:>12.0} {:>6.2}×\n",
            f["flag"].as_str().unwrap_or(""),
            num(&f["native_ns"]),
            num(&f["wasmtime_ns"]),
            num(&f["ratio"])
        ));
    }
    let a = &r["all_flags"];
    out.push_str(&format!(
        "{:<34} {:>12.0} {:>12.0} {:>6.2}×\n\n",
        format!("all {} flags in one call", a["count"]),
        num(&a["native_ns"]),
        num(&a["wasmtime_ns"]),
        num(&a["ratio"])
    ));
    if let Some(c) = r["compile_ms"].as_f64() {
        out.push_str(&format!("compile rules → module: {c} ms\n"));
    }
    out.push_str(&format!(
        "wasmtime validate + compile + instantiate (load): {} ms\nnative decode of the rules: {} ms\n",
        r["wasmtime_load_ms"], r["native_decode_ms"]
    ));
    out
}
