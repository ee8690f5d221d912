//! `flagforge import`: another system's flag definitions to a checked rule file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::{Subcommand, ValueEnum};
use flagforge_compiler::SourceFile;
use flagforge_import::{flagd, Options};

/// Largest definitions file read (checked before reading).
const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;

/// Days until the default expiry of imported flags.
const DEFAULT_EXPIRY_DAYS: i64 = 90;

#[derive(Debug, Subcommand)]
pub enum From {
    /// flagd flag definitions (JSON): flags, $evaluators, metadata, JSON Logic targeting.
    Flagd {
        /// The flagd definitions file.
        file: PathBuf,
        /// Directory to write the rule file into (created if missing).
        #[arg(short, long)]
        out: PathBuf,
        /// Ruleset name (default: the file's name without extension).
        #[arg(long)]
        ruleset: Option<String>,
        /// How flagd hashes `fractional` buckets: v2 (murmur3 of the text, flagd today) or v3
        /// (of its CBOR encoding). A flag's metadata `"flagforge.fractional": "v3"` overrides.
        #[arg(long, value_enum, default_value_t = Fractional::V2)]
        fractional: Fractional,
        /// Owner given to flags whose metadata names none (`owner` or `team`).
        #[arg(long, default_value = "unassigned")]
        owner: String,
        /// Expiry (YYYY-MM-DD) given to every imported flag (default: 90 days from today).
        #[arg(long)]
        expires: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Fractional {
    V2,
    V3,
}

pub fn run(from: From) -> Result<ExitCode> {
    let From::Flagd {
        file,
        out,
        ruleset,
        fractional,
        owner,
        expires,
    } = from;
    let text = read_bounded(&file)?;
    let ruleset = match ruleset {
        Some(r) => r,
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(|s| s.trim_end_matches(".flagd").to_owned())
            .context("name the ruleset with --ruleset")?,
    };
    let expires = match expires {
        Some(e) => e,
        None => default_expiry()?,
    };
    let opts = Options {
        ruleset: ruleset.clone(),
        expires,
        owner,
        source: file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    };
    let fractional = match fractional {
        Fractional::V2 => flagd::Fractional::V2,
        Fractional::V3 => flagd::Fractional::V3,
    };
    let imported = match flagd::import(&text, &opts, fractional) {
        Ok(i) => i,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {}: {e}", file.display());
            }
            eprintln!(
                "{} part(s) of {} cannot be translated; nothing was written",
                errors.len(),
                file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let target = out.join(format!("{ruleset}.yaml"));
    // The output must build: a failure here is an importer bug, reported as such.
    let checked = flagforge_compiler::compile_ir(&[SourceFile {
        path: target.display().to_string(),
        text: imported.yaml.clone(),
    }]);
    if let Err(e) = checked {
        eprintln!("{e}");
        bail!(
            "the translation of {} does not build (an importer bug); nothing was written",
            file.display()
        );
    }
    if target.exists() {
        bail!(
            "{} exists; remove it or choose another --out",
            target.display()
        );
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(&target, &imported.yaml)
        .with_context(|| format!("writing {}", target.display()))?;
    println!(
        "imported {} flag(s) into {} (checked: it builds)",
        imported.flags,
        target.display()
    );
    println!("review before the first publish:");
    for note in &imported.review {
        println!("  {note}");
    }
    Ok(ExitCode::SUCCESS)
}

fn read_bounded(path: &Path) -> Result<String> {
    let bytes = crate::read_file(path, MAX_IMPORT_BYTES)?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

fn default_expiry() -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let secs = i64::try_from(now)? + DEFAULT_EXPIRY_DAYS * 86_400;
    let stamp = flagforge_protocol::time::format_timestamp(secs * 1_000_000_000);
    Ok(stamp.chars().take(10).collect())
}
