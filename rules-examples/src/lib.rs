//! Locates the example rulesets kept as YAML beside this crate, so tests and benchmarks use
//! the same files as `flagforge demo` and `flagforge test rules-examples/<name>`.

use std::path::PathBuf;

/// Names of the example rulesets (directories under `rules-examples/`).
pub const RULESETS: &[&str] = &["checkout"];

/// The directory of an example ruleset.
#[must_use]
pub fn dir(name: &str) -> PathBuf {
    root().join(name)
}

/// The `rules-examples/` directory.
#[must_use]
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's shared correctness corpus (`corpus/`).
#[must_use]
pub fn corpus() -> PathBuf {
    root().join("..").join("corpus")
}
