//! Runs test cases through the module in wasmtime and natively through evaluator-core, and
//! requires byte-identical results from both before checking expectations.

use std::path::Path;

use anyhow::{anyhow, Result};
use evaluator_core::Ruleset;
use flagforge_compiler::{Case, Compiled};
use flagforge_protocol::{abi, decode, encode, value::encode_context, Resolution};
use flagforge_runtime::{options, Runtime};
use wasm_host::{Host, Limits, LoadedModule};

/// One failing case.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Case name.
    pub case: String,
    /// `file:line`.
    pub location: String,
    /// What went wrong.
    pub detail: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Ruleset name.
    pub ruleset: String,
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Of the failures, how many were native/wasmtime disagreements.
    pub disagreements: usize,
    /// The failures.
    pub failures: Vec<Failure>,
    /// Flags no case evaluates.
    pub untested_flags: Vec<String>,
}

impl Report {
    /// Prints failures, coverage warnings and the final `N passed, M failed` line.
    pub fn print(&self) {
        for f in &self.failures {
            outln!(
                "FAIL {} ({})\n  {}",
                f.case,
                f.location,
                f.detail.replace('\n', "\n  ")
            );
        }
        if !self.untested_flags.is_empty() {
            outln!(
                "warning: flags with no test case: {}",
                self.untested_flags.join(", ")
            );
        }
        outln!(
            "ruleset `{}`: native and wasmtime disagreed on {} case(s)",
            self.ruleset,
            self.disagreements
        );
        outln!("{} passed, {} failed", self.passed, self.failed);
    }
}

/// Compiles the ruleset at `path` and runs its `tests/` cases.
pub fn run_dir(path: &Path) -> Result<Report> {
    let compiled = flagforge_compiler::compile_path(path).map_err(|e| anyhow!("{e}"))?;
    let cases = flagforge_compiler::load_cases(path, "tests").map_err(|e| anyhow!("{e}"))?;
    run_cases(&compiled, &cases)
}

/// Both evaluators of one compiled ruleset.
pub struct Engines {
    /// evaluator-core, natively.
    pub native: Ruleset,
    /// The module in wasmtime.
    pub wasm: LoadedModule,
    /// The host runtime over the native evaluator (the module's runtime is inside `wasm`).
    runtime: Runtime,
}

impl Engines {
    /// Loads both from a compiled ruleset.
    pub fn new(compiled: &Compiled) -> Result<Engines> {
        let native = Ruleset::decode(&compiled.rules)?;
        let wasm = Host::new(Limits::default())?.load(&compiled.module)?;
        let runtime = Runtime::new(native.manifest(), usize::MAX);
        Ok(Engines {
            native,
            wasm,
            runtime,
        })
    }

    /// The native evaluator behind the host runtime: what a host serves, with evaluator-core
    /// in place of the module.
    fn native_one(&self, key: &str, ctx: &[u8], explain: bool) -> Resolution {
        let prepared = self.runtime.prepare_canonical(key, ctx, explain);
        self.runtime.answer(key, prepared, |flag, context| {
            let mut out = Vec::new();
            self.native
                .evaluate_record(flag, context, options(explain), &mut out);
            self.runtime.finish(flag, &out)
        })
    }

    fn native_all(&self, ctx: &[u8], explain: bool) -> Vec<Resolution> {
        self.runtime
            .answer_all(self.runtime.translate(None, ctx), |context| {
                let mut out = Vec::new();
                self.native
                    .evaluate_all_records(context, options(explain), &mut out);
                self.runtime.finish_all(&out)
            })
    }

    /// Evaluates a case on both; returns the encoded results (native, wasmtime) for the
    /// option bits `options`.
    pub fn both(&self, case: &Case, options: u32) -> Result<(Vec<u8>, Vec<u8>)> {
        let ctx = encode_context(&case.context)?;
        let explain = options & abi::OPT_EXPLAIN != 0;
        Ok(match &case.flag {
            Some(flag) => (
                encode(&self.native_one(flag, &ctx, explain))?,
                encode(&self.wasm.evaluate_canonical(flag, &ctx, explain))?,
            ),
            None => (
                encode(&self.native_all(&ctx, explain))?,
                encode(&self.wasm.evaluate_all_canonical(&ctx, explain))?,
            ),
        })
    }
}

fn show(bytes: &[u8]) -> String {
    match decode::<serde_json::Value>(bytes) {
        Ok(v) => v.to_string(),
        Err(_) => format!("{bytes:02x?}"),
    }
}

/// Runs cases against a compiled ruleset.
pub fn run_cases(compiled: &Compiled, cases: &[Case]) -> Result<Report> {
    let engines = Engines::new(compiled)?;
    let mut report = Report {
        ruleset: compiled.ir.name.clone(),
        ..Report::default()
    };
    for case in cases {
        match check_case(&engines, case) {
            Ok(()) => report.passed += 1,
            Err((detail, disagreement)) => {
                report.failed += 1;
                report.disagreements += usize::from(disagreement);
                report.failures.push(Failure {
                    case: case.name.clone(),
                    location: case.location.clone(),
                    detail,
                });
            }
        }
    }
    report.untested_flags = compiled
        .ir
        .flags
        .iter()
        .filter(|f| {
            !cases
                .iter()
                .any(|c| c.flag.as_deref() == Some(f.key.as_str()))
        })
        .map(|f| f.key.clone())
        .collect();
    Ok(report)
}

fn check_case(engines: &Engines, case: &Case) -> Result<(), (String, bool)> {
    let mut plain = None;
    for options in [0, abi::OPT_EXPLAIN] {
        let (native, wasm) = engines
            .both(case, options)
            .map_err(|e| (format!("{e:#}"), false))?;
        if native != wasm {
            return Err((
                format!(
                    "native and wasmtime disagree (options {options}):\n  native:   {}\n  wasmtime: {}",
                    show(&native),
                    show(&wasm)
                ),
                true,
            ));
        }
        plain.get_or_insert(native);
    }
    let Some(flag) = &case.flag else {
        return Ok(());
    };
    let bytes = plain.unwrap_or_default();
    let r: Resolution = decode(&bytes).map_err(|e| (format!("undecodable result: {e}"), false))?;
    let mut problems = Vec::new();
    let e = &case.expect;
    if let Some(v) = &e.variant {
        if r.variant.as_deref() != Some(v.as_str()) {
            problems.push(format!("variant: expected `{v}`, got {:?}", r.variant));
        }
    }
    if let Some(v) = &e.value {
        if &r.value != v {
            problems.push(format!(
                "value: expected {}, got {}",
                v.to_json(),
                r.value.to_json()
            ));
        }
    }
    if let Some(reason) = &e.reason {
        if r.reason.as_str() != reason {
            problems.push(format!(
                "reason: expected {reason}, got {}",
                r.reason.as_str()
            ));
        }
    }
    if let Some(code) = &e.error_code {
        let got = r.error_code.map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        });
        if got.as_deref() != Some(code.as_str()) {
            problems.push(format!("error_code: expected {code}, got {got:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err((
            format!(
                "flag `{flag}`: {}\n  result: {}",
                problems.join("; "),
                show(&bytes)
            ),
            false,
        ))
    }
}
