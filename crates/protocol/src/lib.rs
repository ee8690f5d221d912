//! Wire types shared by the flagforge module and every host: the canonical context value,
//! evaluation results in OpenFeature vocabulary, the manifest, ABI constants and limits.
//!
//! This crate holds no evaluation semantics. It is what a host needs to talk to a module
//! (`wasm-host`, the JS bindings) and what the guest needs to answer it, so both sides encode
//! and decode with the same code.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod abi;
pub mod codec;
pub mod limits;
pub mod manifest;
pub mod positional;
pub mod resolution;
pub mod time;
pub mod value;
pub mod wire;

/// The context key OpenFeature puts the subject's identifier in. A ruleset names the attribute
/// it stands for (`targeting_key:`, default this name itself); hosts send the value of
/// `targetingKey` in that attribute's slot when the context does not set it (absent or null),
/// so an explicit attribute wins ([`positional`]).
pub const TARGETING_KEY: &str = "targetingKey";

pub use codec::{decode, encode, CodecError};
pub use manifest::{
    AttrDecl, FlagInfo, FlagKind, Lifecycle, Manifest, Propagation, ValueType, VariantInfo,
};
pub use resolution::{ErrorCode, Explanation, Reason, Resolution, Step};
pub use value::{Context, Value};
