//! Distribution of modules, independent of the transport: the signed envelope a module
//! travels in, the keys that may sign it, the rule deciding which envelope a host keeps, and
//! the snapshot directory a host starts from before any broker answers.
//!
//! ```
//! use flagforge_distribution::{Envelope, KeyPair, TrustedKeys, Draft};
//!
//! let key = KeyPair::generate().unwrap();
//! let envelope = Envelope::sign(
//!     Draft { ruleset: "checkout".into(), version: 1, module: b"\0asm\x01\0\0\0".to_vec(),
//!             created_at: "2026-11-25T10:00:00Z".into(), reason: Some("launch".into()),
//!             ..Draft::default() },
//!     &key,
//! );
//! let trusted = TrustedKeys::new([key.public()]);
//! assert!(envelope.verify(&trusted).is_ok());
//! ```
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod envelope;
mod keys;
mod order;
mod snapshot;

pub use envelope::{Draft, Envelope, RejectReason, Signature, ENVELOPE_FORMAT};
pub use keys::{KeyError, KeyPair, PublicKey, TrustedKeys};
pub use order::{decide, Decision};
pub use snapshot::{SnapshotDir, SnapshotError, SnapshotLoad};
