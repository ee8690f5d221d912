//! Compiler integration tests: located diagnostics (data-driven), determinism, module shape.

mod diagnostics;
mod module_shape;
mod robustness;
