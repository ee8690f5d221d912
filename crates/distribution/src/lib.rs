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

mod envelope;
mod keys;
mod order;
mod snapshot;

pub use envelope::{
    Draft, Envelope, Position, RejectReason, Signature, ENVELOPE_FORMAT, MAX_RECORD_BYTES,
};
pub use keys::{KeyError, KeyPair, PublicKey, TrustedKeys};
pub use order::{decide, Decision};
pub use snapshot::{SnapshotDir, SnapshotError, SnapshotLoad};

/// Reads a file of at most `limit` bytes: the size is checked before reading (and the read
/// itself stops past the limit, for files that grow or lie about their size, like
/// `/dev/zero`), so no input can make a reader allocate more than its bound.
pub fn read_bounded(path: &std::path::Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let too_large = |size: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{size} bytes or more; the limit is {limit} bytes"),
        )
    };
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > limit as u64 {
        return Err(too_large(meta.len()));
    }
    let mut out = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}
