//! CLI integration tests: the shared corpus on every engine, and the `flagforge` binary's
//! documented outputs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

mod audience;
mod commands;
mod corpus;
mod golden;
mod governance;
mod import;
