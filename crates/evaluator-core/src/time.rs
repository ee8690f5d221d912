//! Timestamps and durations: re-exported from the protocol crate (see there).

pub use flagforge_protocol::time::*;
