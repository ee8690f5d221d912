//! flagforge rule semantics: evaluating the compiled rule model (`flagforge-model`,
//! re-exported as [`ir`]).
//!
//! This is the only crate that decides what a rule means. It is compiled into every module (by
//! the guest crate) and linked natively by the tools that cross-check modules. It does no IO,
//! reads no clock and starts no threads: an evaluation is a pure function of the compiled rules
//! and the context, which is what lets a decision be replayed later on any host.
//!
//! ```
//! use evaluator_core::{ir, Ruleset, Options};
//! use flagforge_protocol::{Context, Reason, Value};
//!
//! let ir = ir::RulesetIr::example();
//! let rules = Ruleset::from_ir(ir).unwrap();
//! let mut ctx = Context::new();
//! ctx.insert("market".into(), Value::from("FR"));
//! let r = rules.evaluate("NewCheckout", &ctx, Options::default());
//! assert_eq!(r.reason, Reason::TargetingMatch);
//! assert_eq!(r.value, Value::Bool(true));
//! ```
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod bind;
pub mod bucket;
mod eval;
pub mod time;
mod wire;

pub use flagforge_model::ir;

pub use eval::{Options, Ruleset};

/// Failure to load compiled rules.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The embedded rules do not decode, or use another format.
    #[error(transparent)]
    Decode(#[from] flagforge_model::DecodeError),
    /// A table entry (regex, semver) does not parse.
    #[error("invalid {what} `{text}` in compiled rules: {message}")]
    Invalid {
        /// What kind of entry.
        what: &'static str,
        /// Its text.
        text: String,
        /// Why it was refused.
        message: String,
    },
    /// An index points outside its table.
    #[error("compiled rules reference {what} {index}, which does not exist")]
    Dangling {
        /// What kind of table.
        what: &'static str,
        /// The bad index.
        index: u32,
    },
}
