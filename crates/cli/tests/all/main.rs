//! CLI integration tests: the shared corpus on every engine, and the `flagforge` binary's
//! documented outputs.

mod audience;
mod commands;
mod corpus;
mod golden;
mod governance;
