//! Explicit bounds on what a module and its hosts accept. Each bound has an adversarial test.

/// Largest encoded context a host sends into a module (bytes).
pub const MAX_CONTEXT_BYTES: usize = 1024 * 1024;
/// Deepest nesting of lists and maps accepted in a context value.
pub const MAX_DEPTH: usize = 32;
/// Longest flag key accepted (bytes).
pub const MAX_FLAG_KEY_BYTES: usize = 256;
/// Largest module a host loads (bytes).
pub const MAX_MODULE_BYTES: usize = 8 * 1024 * 1024;
/// Largest envelope a publisher produces and a module `flagforge build` writes (bytes): well
/// under a Kafka broker's default 1 MB message limit. A module above it cannot be published.
pub const MAX_PUBLISH_BYTES: usize = 900 * 1024;
/// Largest total size of one ruleset's rule files (bytes), checked before they are read.
pub const MAX_RULE_SOURCE_BYTES: usize = 4 * 1024 * 1024;
