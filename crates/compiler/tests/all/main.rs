//! Compiler integration tests: located diagnostics (data-driven), determinism, module shape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

mod diagnostics;
mod module_shape;
mod robustness;
