//! Compiles flagforge rule files into one self-contained WebAssembly module.
//!
//! `sources → parse (located YAML) → check and resolve (schema, segments, flags, expressions)
//! → compiled model → link into the guest module`. The same sources always give the same
//! module bytes, and so the same sha256.
//!
//! ```no_run
//! let out = flagforge_compiler::compile_path("rules-examples/checkout".as_ref())?;
//! println!("{} bytes, sha256 {}", out.module.len(), out.sha256);
//! # Ok::<(), flagforge_compiler::CompileError>(())
//! ```

pub mod audience;
mod cases;
mod compile;
mod diag;
mod expr;
pub mod link;

use std::path::{Path, PathBuf};

use evaluator_core::ir::RulesetIr;
use flagforge_protocol::limits::MAX_RULE_SOURCE_BYTES;
use marked_yaml::{LoadError as YamlError, LoaderOptions, Node};
use sha2::{Digest, Sha256};

pub use cases::{load_cases, Case, CaseError, Expect};
pub use compile::SourceFile;
pub use diag::{CompileError, Diagnostic};

/// The generic guest module (evaluator-core for wasm32, no rules), built by `build.rs`.
pub const GUEST_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.wasm"));

/// Version recorded in every module's manifest.
pub const COMPILER_VERSION: &str = concat!("flagforge ", env!("CARGO_PKG_VERSION"));

/// A compiled ruleset.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The compiled model.
    pub ir: RulesetIr,
    /// The encoded model, as embedded in the module.
    pub rules: Vec<u8>,
    /// The module bytes.
    pub module: Vec<u8>,
    /// sha256 of `module`, lowercase hex.
    pub sha256: String,
    /// The rule files read, in order.
    pub files: Vec<PathBuf>,
}

/// The rule files of a path: the file itself, or the `*.yaml`/`*.yml` files directly inside a
/// directory, sorted by name (test files live in its `tests/` subdirectory).
pub fn rule_files(path: &Path) -> Result<Vec<PathBuf>, CompileError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    yaml_files(path)
}

/// The `*.yaml`/`*.yml` files directly inside `dir`, sorted by name.
pub(crate) fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, CompileError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CompileError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads files into sources, reporting each under its path as given. Their total size is
/// bounded ([`MAX_RULE_SOURCE_BYTES`]): sizes are checked before anything is read, and each
/// read stops at what is left of the bound.
pub(crate) fn read_sources(files: &[PathBuf]) -> Result<Vec<SourceFile>, CompileError> {
    use std::io::Read as _;
    let io = |f: &Path, message: String| CompileError::Io {
        path: f.display().to_string(),
        message,
    };
    let too_large = |f: &Path, total: u64| {
        io(
            f,
            format!(
                "the rule files add up to {total} bytes or more; the limit for one ruleset is {MAX_RULE_SOURCE_BYTES} bytes"
            ),
        )
    };
    let mut total: u64 = 0;
    for f in files {
        total += std::fs::metadata(f)
            .map_err(|e| io(f, e.to_string()))?
            .len();
        if total > MAX_RULE_SOURCE_BYTES as u64 {
            return Err(too_large(f, total));
        }
    }
    let mut left = MAX_RULE_SOURCE_BYTES as u64;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let mut bytes = Vec::new();
        std::fs::File::open(f)
            .and_then(|file| file.take(left + 1).read_to_end(&mut bytes))
            .map_err(|e| io(f, e.to_string()))?;
        if bytes.len() as u64 > left {
            return Err(too_large(f, MAX_RULE_SOURCE_BYTES as u64 + 1));
        }
        left -= bytes.len() as u64;
        let text = String::from_utf8(bytes).map_err(|_| io(f, "not UTF-8 text".to_owned()))?;
        out.push(SourceFile {
            path: f.display().to_string(),
            text,
        });
    }
    Ok(out)
}

/// Reads and compiles the rules at `path` (a file or a directory).
pub fn compile_path(path: &Path) -> Result<Compiled, CompileError> {
    compile_path_edited(path, |_, text| text)
}

/// Like [`compile_path`], with each file's text passed through `edit(path, text)` first
/// (variants of a ruleset in demos, tests and benchmarks).
pub fn compile_path_edited(
    path: &Path,
    mut edit: impl FnMut(&Path, String) -> String,
) -> Result<Compiled, CompileError> {
    let files = rule_files(path)?;
    let sources: Vec<SourceFile> = read_sources(&files)?
        .into_iter()
        .zip(&files)
        .map(|(s, f)| SourceFile {
            text: edit(f, s.text),
            path: s.path,
        })
        .collect();
    if sources.is_empty() {
        return Err(CompileError::Io {
            path: path.display().to_string(),
            message: "no rule files (*.yaml) found".into(),
        });
    }
    let mut out = compile_sources(&sources)?;
    out.files = files;
    Ok(out)
}

/// Checks the rules at `path` without linking a module.
pub fn check_path(path: &Path) -> Result<RulesetIr, CompileError> {
    compile_path(path).map(|c| c.ir)
}

/// The audience build of a compiled ruleset (`flagforge build --audience`): only the flags
/// exposed to `audience`, membership sets as keyed digests; see [`audience`].
pub fn compile_audience(full: &Compiled, audience: &str) -> Result<Compiled, CompileError> {
    link_ir(audience::restrict(&full.ir, audience)?, full.files.clone())
}

/// Compiles rule sources (already read) into a module.
pub fn compile_sources(sources: &[SourceFile]) -> Result<Compiled, CompileError> {
    link_ir(compile_ir(sources)?, vec![])
}

/// Encodes a compiled model and links it into the guest.
fn link_ir(ir: RulesetIr, files: Vec<PathBuf>) -> Result<Compiled, CompileError> {
    let rules = ir.encode();
    let module = link::link(GUEST_WASM, &rules)?;
    let sha256 = hex::encode(Sha256::digest(&module));
    Ok(Compiled {
        ir,
        rules,
        module,
        sha256,
        files,
    })
}

/// Compiles rule sources into the model only.
pub fn compile_ir(sources: &[SourceFile]) -> Result<RulesetIr, CompileError> {
    let mut compiler = compile::Compiler::new(sources);
    let mut docs: Vec<Node> = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        match parse_yaml(i, &src.text) {
            Ok(node) => docs.push(node),
            Err((span, message)) => compiler.error(&span, message),
        }
    }
    let ir = compiler.compile(&docs, COMPILER_VERSION);
    match ir {
        Some(ir) if compiler.diags.is_empty() => Ok(ir),
        _ => {
            let mut diags = compiler.diags;
            diags.sort_by(|a, b| {
                (a.file.as_str(), a.line, a.col).cmp(&(b.file.as_str(), b.line, b.col))
            });
            diags.dedup();
            Err(CompileError::Rules(diags))
        }
    }
}

/// Parses one YAML document with locations; duplicate keys are errors.
pub(crate) fn parse_yaml(source: usize, text: &str) -> Result<Node, (marked_yaml::Span, String)> {
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    marked_yaml::parse_yaml_with_options(source, text, options).map_err(|e| {
        let (marker, message) = match &e {
            YamlError::TopLevelMustBeMapping(m) => (
                Some(*m),
                "the top level must be a mapping (`ruleset: ...`)".to_owned(),
            ),
            YamlError::TopLevelMustBeSequence(m) => {
                (Some(*m), "the top level must be a list".to_owned())
            }
            YamlError::UnexpectedAnchor(m) => {
                (Some(*m), "YAML anchors are not supported".to_owned())
            }
            YamlError::MappingKeyMustBeScalar(m) => {
                (Some(*m), "mapping keys must be plain values".to_owned())
            }
            YamlError::UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".to_owned()),
            YamlError::ScanError(m, s) => (Some(*m), format!("invalid YAML: {s}")),
            YamlError::DuplicateKey(d) => (
                d.key.span().start().copied(),
                format!(
                    "duplicate key `{}` (first at line {})",
                    d.key.as_str(),
                    d.prev_key.span().start().map_or(0, |m| m.line())
                ),
            ),
            #[allow(unreachable_patterns)]
            other => (None, other.to_string()),
        };
        let span = marker.map_or_else(marked_yaml::Span::new_blank, |mut m| {
            m.set_source(source);
            marked_yaml::Span::new_start(m)
        });
        (span, message)
    })
}
