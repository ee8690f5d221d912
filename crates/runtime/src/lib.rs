//! The host side of the flagforge module ABI (`ABI.md`, version 2), once for every Rust host.
//!
//! A host owns instances and what bounds them (wasmtime's pool with fuel and memory caps, the
//! browser's one instance). Everything between a caller's question and the module's answer
//! that is not running the module lives here, so hosts cannot drift apart:
//!
//! - addressing: flag keys to flag numbers, each flag's attribute slots ([`Layout`]);
//! - the positional context sent for a call, from a [`Context`] or from canonical bytes, with
//!   its size bound;
//! - answers that need no call: unknown flags, and flags whose answer reads nothing (asked
//!   once at load, then remembered);
//! - expanding the module's result records into [`Resolution`]s from the manifest;
//! - the input region's growth policy ([`InputRegion`]);
//! - the call error vocabulary ([`CallError`]) and the `on_error` fallback it leads to.
//!
//! ```text
//! let prepared = runtime.prepare(key, &ctx, explain);
//! runtime.answer(key, prepared, |flag, context| {
//!     // write `context` into the input region, call ff_evaluate(flag, len, options)
//!     runtime.finish(flag, record)
//! })
//! ```

use std::ops::ControlFlow;

pub use flagforge_protocol::positional::Layout;
use flagforge_protocol::{
    abi, positional, CodecError, Context, ErrorCode, Manifest, Reason, Resolution,
};

/// Why a host refuses a module: the stable names every host reports (Rust hosts, the browser
/// bindings, Python), checked by the host-conformance corpus (`corpus/host`).
pub mod load {
    /// Larger than the host's module size limit.
    pub const TOO_LARGE: &str = "too_large";
    /// Not a WebAssembly binary (magic bytes).
    pub const BAD_MAGIC: &str = "bad_magic";
    /// The engine refused it: malformed, invalid, or not a core module.
    pub const INVALID_MODULE: &str = "invalid_module";
    /// It imports something; flagforge modules import nothing.
    pub const IMPORTS: &str = "imports";
    /// A required export is missing or has the wrong type.
    pub const MISSING_EXPORT: &str = "missing_export";
    /// It implements another ABI version (a version 1 module included).
    pub const ABI_VERSION: &str = "abi_version";
    /// It cannot be instantiated within the host's limits.
    pub const INSTANTIATE: &str = "instantiate";
    /// It trapped or exhausted its budget while reporting its version or manifest.
    pub const UNUSABLE: &str = "unusable";
    /// Its manifest says it cannot serve (no or corrupt rules).
    pub const NO_RULES: &str = "no_rules";
    /// Its manifest does not decode.
    pub const BAD_MANIFEST: &str = "bad_manifest";
}

/// Why a call produced no answer from the module. [`CallError::code`] is the error code of
/// the fallback served; [`CallError::name`] is the stable name hosts count and report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The module trapped (the instance is discarded).
    #[error("module trapped: {0}")]
    Trap(String),
    /// The call used its whole fuel budget (the instance is discarded).
    #[error("the call exceeded its fuel budget of {0}")]
    OutOfFuel(u64),
    /// The module could not allocate (memory cap reached; the instance is discarded).
    #[error("module is out of memory")]
    OutOfMemory,
    /// The module returned a location outside its memory or an unreadable record (the
    /// instance is discarded).
    #[error("module returned a malformed result: {0}")]
    BadResult(String),
    /// The context is larger than the host accepts.
    #[error("context is {size} bytes encoded; the limit is {limit} bytes")]
    ContextTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The context could not be encoded.
    #[error("cannot encode the context: {0}")]
    Encode(String),
    /// Context bytes given to a byte-level API do not decode (the module's wording: the
    /// message starts with `context:`).
    #[error("context: {0}")]
    Parse(String),
    /// No instance could be created for the call.
    #[error("cannot create a module instance: {0}")]
    Instantiate(String),
}

impl CallError {
    /// The error code of the fallback served for this failure.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::ContextTooLarge { .. } | CallError::Encode(_) => ErrorCode::InvalidContext,
            CallError::Parse(_) => ErrorCode::ParseError,
            _ => ErrorCode::General,
        }
    }

    /// The stable name of this failure, the same on every host (`corpus/host`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::OutOfFuel(_) => "out_of_fuel",
            CallError::OutOfMemory => "out_of_memory",
            CallError::BadResult(_) => "bad_result",
            CallError::ContextTooLarge { .. } => "context_too_large",
            CallError::Encode(_) => "invalid_context",
            CallError::Parse(_) => "parse_error",
            CallError::Instantiate(_) => "instantiate",
        }
    }

    /// Whether the instance that produced this failure must never be called again.
    #[must_use]
    pub fn discards_instance(&self) -> bool {
        matches!(
            self,
            CallError::Trap(_)
                | CallError::OutOfFuel(_)
                | CallError::OutOfMemory
                | CallError::BadResult(_)
        )
    }
}

/// What to do for one flag.
#[derive(Debug)]
pub enum Prepared {
    /// Call the module: `ff_evaluate(flag, context.len(), options)` with `context` in the
    /// input region, then [`Runtime::finish`].
    Call {
        /// The flag's number.
        flag: u32,
        /// The positional context.
        context: Vec<u8>,
    },
    /// The answer without a call: the flag's answer reads nothing and was remembered.
    Constant(Resolution),
    /// The answer without a call: the ruleset has no such flag.
    Answer(Resolution),
    /// The input was refused before any call; the flag's `on_error` answer.
    Refused(Resolution, CallError),
}

/// The ABI option bits for a call.
#[must_use]
pub fn options(explain: bool) -> u32 {
    if explain {
        abi::OPT_EXPLAIN
    } else {
        0
    }
}

/// An instance's input region as a host last reserved it. The region only grows: a context
/// that does not fit reserves the next power of two (at least 1 KiB), so most calls reserve
/// nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputRegion(Option<(u32, u32)>);

impl InputRegion {
    /// The region's address for `len` bytes, calling `reserve(capacity)` (the module's
    /// `ff_input`) when it is too small; `reserve` answering 0 means memory is exhausted.
    pub fn fit(
        &mut self,
        len: u32,
        reserve: impl FnOnce(u32) -> Result<u32, CallError>,
    ) -> Result<u32, CallError> {
        match self.0 {
            Some((ptr, cap)) if cap >= len => Ok(ptr),
            _ => {
                let cap = len.max(1024).checked_next_power_of_two().unwrap_or(len);
                let ptr = reserve(cap)?;
                if ptr == 0 {
                    return Err(CallError::OutOfMemory);
                }
                self.0 = Some((ptr, cap));
                Ok(ptr)
            }
        }
    }
}

/// One loaded module's host-side state: its manifest, layout and remembered answers.
#[derive(Debug, Clone)]
pub struct Runtime {
    manifest: Manifest,
    layout: Layout,
    max_context_bytes: usize,
    constant: Vec<Option<Resolution>>,
}

/// The empty positional context (MessagePack `{}`).
pub const EMPTY_CONTEXT: &[u8] = &[0x80];

impl Runtime {
    /// The runtime of a module that reported `manifest`; contexts above `max_context_bytes`
    /// (encoded) are refused before any call.
    #[must_use]
    pub fn new(manifest: Manifest, max_context_bytes: usize) -> Runtime {
        let layout = Layout::new(&manifest);
        let constant = vec![None; manifest.flags.len()];
        Runtime {
            manifest,
            layout,
            max_context_bytes,
            constant,
        }
    }

    /// The module's manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The module's slots.
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The flags whose answer reads no attribute: a host asks the module once, at load,
    /// with [`EMPTY_CONTEXT`], and hands each answer to [`Runtime::remember`].
    #[must_use]
    pub fn constant_flags(&self) -> Vec<u32> {
        (0..self.manifest.flags.len() as u32)
            .filter(|&i| self.layout.plan(Some(i)).slots.is_empty())
            .collect()
    }

    /// Remembers the module's answer for a flag that reads nothing. `ERROR` answers are not
    /// remembered (those flags keep going through the module).
    pub fn remember(&mut self, flag: u32, answer: Resolution) {
        if answer.reason != Reason::Error && answer.explain.is_none() {
            if let Some(slot) = self.constant.get_mut(flag as usize) {
                *slot = Some(answer);
            }
        }
    }

    /// Refuses a context of `size` encoded bytes above the host's limit.
    pub fn check_size(&self, size: usize) -> Result<(), CallError> {
        if size > self.max_context_bytes {
            return Err(CallError::ContextTooLarge {
                size,
                limit: self.max_context_bytes,
            });
        }
        Ok(())
    }

    /// The flag's number, or the answer when none needs a call.
    fn lookup(&self, key: &str, explain: bool) -> ControlFlow<Prepared, u32> {
        let Some(flag) = self.layout.flag(key) else {
            return ControlFlow::Break(Prepared::Answer(self.manifest.fallback(
                key,
                ErrorCode::FlagNotFound,
                "",
            )));
        };
        if !explain {
            if let Some(Some(r)) = self.constant.get(flag as usize) {
                return ControlFlow::Break(Prepared::Constant(r.clone()));
            }
        }
        ControlFlow::Continue(flag)
    }

    /// What to do for `key`: the answer when none needs a call, else the call with the
    /// positional context `context` makes for the flag.
    fn prepare_with(
        &self,
        key: &str,
        explain: bool,
        context: impl FnOnce(u32) -> Result<Vec<u8>, CallError>,
    ) -> Prepared {
        let flag = match self.lookup(key, explain) {
            ControlFlow::Continue(flag) => flag,
            ControlFlow::Break(done) => return done,
        };
        match context(flag) {
            Ok(context) => Prepared::Call { flag, context },
            Err(e) => Prepared::Refused(self.fallback(key, &e), e),
        }
    }

    /// What to do for `key` with `ctx`: only the attributes the flag's answer can depend on
    /// are encoded.
    #[must_use]
    pub fn prepare(&self, key: &str, ctx: &Context, explain: bool) -> Prepared {
        self.prepare_with(key, explain, |flag| self.encode(Some(flag), ctx))
    }

    /// What to do for `key` with canonical context bytes (`ABI.md`, "Context"): bytes that do
    /// not decode are refused with `PARSE_ERROR`, as the module would.
    #[must_use]
    pub fn prepare_canonical(&self, key: &str, canonical: &[u8], explain: bool) -> Prepared {
        self.prepare_with(key, explain, |flag| self.translate(Some(flag), canonical))
    }

    /// The positional context for an all-flags call (`flag` `None`) or one flag. A value the
    /// canonical encoding refuses (nested deeper than the limit, not finite) is refused here,
    /// before any call, as `INVALID_CONTEXT`.
    pub fn encode(&self, flag: Option<u32>, ctx: &Context) -> Result<Vec<u8>, CallError> {
        let mut out = Vec::with_capacity(64);
        positional::encode(ctx, self.layout.plan(flag), &mut out).map_err(|e| match e {
            CodecError::Encode(why) | CodecError::Decode(why) => CallError::Encode(why),
        })?;
        self.check_size(out.len())?;
        Ok(out)
    }

    /// The positional context from canonical bytes, bounded before they are read.
    pub fn translate(&self, flag: Option<u32>, canonical: &[u8]) -> Result<Vec<u8>, CallError> {
        self.check_size(canonical.len())?;
        positional::from_canonical(canonical, self.layout.plan(flag))
            .map_err(|e| CallError::Parse(e.0))
    }

    /// The answer `prepared` leads to. When it needs a call, `call(flag, context)` gives the
    /// flag's result (a module's record, expanded with [`Runtime::finish`]); a failed call
    /// serves the flag's fallback.
    pub fn answer(
        &self,
        key: &str,
        prepared: Prepared,
        call: impl FnOnce(u32, &[u8]) -> Result<Resolution, CallError>,
    ) -> Resolution {
        match prepared {
            Prepared::Call { flag, context } => {
                call(flag, &context).unwrap_or_else(|e| self.fallback(key, &e))
            }
            Prepared::Constant(r) | Prepared::Answer(r) | Prepared::Refused(r, _) => r,
        }
    }

    /// Every flag's result from one all-flags call over `context` (see [`Runtime::answer`]);
    /// every flag's fallback when the context was refused or the call failed.
    pub fn answer_all(
        &self,
        context: Result<Vec<u8>, CallError>,
        call: impl FnOnce(&[u8]) -> Result<Vec<Resolution>, CallError>,
    ) -> Vec<Resolution> {
        context
            .and_then(|c| call(&c))
            .unwrap_or_else(|e| self.fallback_all(&e))
    }

    /// Expands the module's record for flag number `flag`.
    pub fn finish(&self, flag: u32, record: &[u8]) -> Result<Resolution, CallError> {
        self.manifest
            .expand_one(flag, record)
            .map_err(|e| CallError::BadResult(e.to_string()))
    }

    /// Expands the records of an all-flags call.
    pub fn finish_all(&self, records: &[u8]) -> Result<Vec<Resolution>, CallError> {
        self.manifest
            .expand_all(records)
            .map_err(|e| CallError::BadResult(e.to_string()))
    }

    /// The answer served for `key` when the module gave none: its `on_error` variant with
    /// the failure's code and message (`FLAG_NOT_FOUND` for an unknown flag).
    #[must_use]
    pub fn fallback(&self, key: &str, err: &CallError) -> Resolution {
        self.manifest.fallback(key, err.code(), err.to_string())
    }

    /// Every flag's fallback for one failure, in declaration order.
    #[must_use]
    pub fn fallback_all(&self, err: &CallError) -> Vec<Resolution> {
        self.manifest
            .flags
            .iter()
            .map(|f| f.fallback(err.code(), err.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_failures_read_as_the_module_words_them() {
        let e = CallError::Parse("trailing bytes after the value".into());
        assert_eq!(e.to_string(), "context: trailing bytes after the value");
        assert_eq!(e.code(), ErrorCode::ParseError);
        assert!(!e.discards_instance());
        assert!(CallError::OutOfFuel(5).discards_instance());
    }
}
