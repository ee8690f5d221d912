//! The main job on the embedded default: build every example ruleset, load each module in
//! wasmtime, and print the decisions for the realistic contexts in `<ruleset>/demo/`.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use wasm_host::{Host, Limits};

use crate::with_now;

/// Runs the demo over every ruleset directory under `examples`.
pub fn run(examples: &Path) -> Result<()> {
    let mut dirs: Vec<_> = std::fs::read_dir(examples)
        .map_err(|e| anyhow!("reading {}: {e}", examples.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !flagforge_compiler::rule_files(p)
                    .map(|f| f.is_empty())
                    .unwrap_or(true)
        })
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!("no ruleset directories under {}", examples.display());
    }
    let host = Host::new(Limits::default())?;
    for dir in dirs {
        let t0 = Instant::now();
        let compiled = flagforge_compiler::compile_path(&dir).map_err(|e| anyhow!("{e}"))?;
        let built = t0.elapsed();
        let t1 = Instant::now();
        let module = host.load(&compiled.module)?;
        let loaded = t1.elapsed();
        outln!("━━ ruleset `{}` ({})", compiled.ir.name, dir.display());
        outln!(
            "   module {} bytes, sha256 {}…, {} flags; built in {:.1} ms, compiled by wasmtime in {:.1} ms",
            compiled.module.len(),
            &compiled.sha256[..16],
            compiled.ir.flags.len(),
            built.as_secs_f64() * 1e3,
            loaded.as_secs_f64() * 1e3
        );
        let scenarios = flagforge_compiler::load_cases(&dir, "demo").map_err(|e| anyhow!("{e}"))?;
        let width = compiled
            .ir
            .flags
            .iter()
            .map(|f| f.key.len())
            .max()
            .unwrap_or(10);
        for s in scenarios {
            let mut ctx = s.context.clone();
            with_now(module.manifest(), &mut ctx, None)?;
            let shown: Vec<String> = s
                .context
                .iter()
                .map(|(k, v)| format!("{k}={}", v.to_json()))
                .collect();
            outln!("\n  ● {}\n    {}", s.name, shown.join(" "));
            for r in module.evaluate_all(&ctx, false) {
                let value = r.value.to_json().to_string();
                let err = r.error_code.map(|c| format!(" {c:?}")).unwrap_or_default();
                outln!(
                    "    {:<width$}  {:<14} {:<24} {}{}",
                    r.key,
                    r.variant.as_deref().unwrap_or("-"),
                    value,
                    r.reason.as_str(),
                    err
                );
            }
        }
        outln!();
    }
    Ok(())
}
