//! The compiled rule model: what `flagforge build` embeds in a module ([`ir`]), and its
//! encoding.
//!
//! A crate of its own so that what reads the rules' structure (the compiler writing them,
//! governance diffing two versions) does not link what evaluates them: hosts reach this crate
//! through governance, never evaluator-core (see ARCHITECTURE.md).
//!
//! ```
//! use flagforge_model::ir::RulesetIr;
//!
//! let ir = RulesetIr::example();
//! assert_eq!(RulesetIr::decode(&ir.encode()).unwrap(), ir);
//! ```
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod ir;

/// Failure to decode compiled rules.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid encoding.
    #[error("compiled rules are malformed: {0}")]
    Malformed(String),
    /// The rules were compiled for another model format.
    #[error("compiled rules use format {found}; this build reads format {expected}")]
    Format {
        /// Format found in the rules.
        found: u32,
        /// Format this build reads.
        expected: u32,
    },
}
