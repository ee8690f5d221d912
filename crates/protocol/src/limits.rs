//! Explicit bounds on what a module and its hosts accept. Each bound has an adversarial test.

/// Largest encoded context a host sends into a module (bytes).
pub const MAX_CONTEXT_BYTES: usize = 1024 * 1024;
/// Deepest nesting of lists and maps accepted in a context value.
pub const MAX_DEPTH: usize = 32;
/// Longest flag key accepted (bytes).
pub const MAX_FLAG_KEY_BYTES: usize = 256;
/// Largest module a host loads (bytes).
pub const MAX_MODULE_BYTES: usize = 8 * 1024 * 1024;
