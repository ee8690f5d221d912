//! Governance of flag changes: what changed ([`diff`], computed from compiled rules), whether a
//! migration may move that way ([`forbidden_transitions`]), who may change it ([`Trust`],
//! [`policy::check`], [`Approval`]), the hash-chained record every publish leaves
//! ([`audit`]), and which flags are due for cleanup ([`stale`]). The same checks run in
//! `flagforge publish` and in every host receiving an envelope.

mod approval;
pub mod audit;
mod diff;
mod lifecycle;
pub mod policy;
pub mod release;
mod render;
mod rules;
mod trust;

pub use approval::{decode_changes, encode_changes, envelope_statement, statement, Approval};
pub use diff::{
    allowed_transitions, diff, flags_changed, forbidden_transitions, Change, FlagRef,
    ForbiddenTransition, RuleDelta,
};
pub use lifecycle::{stale, Expiry, RolledOut, StaleReport, Unreferenced};
pub use rules::{decode_rules, module_rules, module_rules_bytes};
pub use trust::{Member, Role, Trust, TrustError};

/// Failure to read what governance needs.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    /// The module's rules cannot be read.
    #[error("module: {0}")]
    Module(String),
}
