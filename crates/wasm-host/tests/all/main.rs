//! wasm-host integration tests: hostile modules, hostile inputs, limits, concurrency.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

mod compiled_cache;
mod conformance;
mod guests;
mod hostile_input;
mod hostile_modules;
mod limits;
mod mutation;
mod reads;
mod reuse;
