//! Importers from other flag systems into flagforge rule files.
//!
//! Pure functions from the other system's document to the text of one readable rule file:
//! no IO, no clock. What cannot be translated exactly is refused with the JSON path and the
//! reason; nothing is silently changed. The output is meant to be maintained by a person
//! afterwards, and must pass `flagforge check` (the CLI verifies that before writing it).

pub mod flagd;
mod yaml;

/// A refusal: where in the input, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ImportError {
    /// JSON path of the offending value, e.g. `$.flags.banner.targeting.if[0]`.
    pub path: String,
    /// Why it cannot be translated.
    pub reason: String,
}

/// A translated ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The rule file's text.
    pub yaml: String,
    /// Flags imported.
    pub flags: usize,
    /// What the user must review (defaulted metadata, semantics that differ in edge cases).
    pub review: Vec<String>,
}

/// Choices the source format does not record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The ruleset name written to the file.
    pub ruleset: String,
    /// Expiry (`YYYY-MM-DD`) given to flags whose kind requires one and that carry none.
    pub expires: String,
    /// Owner given to flags whose metadata names none.
    pub owner: String,
    /// Where the document came from, quoted in the file's header comment.
    pub source: String,
}
