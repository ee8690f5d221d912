//! The snapshot directory: the last good envelope per ruleset, so a host serves before (or
//! without) any broker.
//!
//! One file per ruleset, `<ruleset>.envelope`, holding the encoded envelope. Writes are atomic
//! and durable: write a temporary file in the same directory, fsync it, rename it over the old
//! one, fsync the directory. Loading verifies every file like an envelope from the network; a
//! corrupt, tampered or misnamed file is reported and never loaded.

use std::path::{Path, PathBuf};

use crate::envelope::{valid_ruleset, Envelope, RejectReason, MAX_RECORD_BYTES};
use crate::keys::TrustedKeys;

const SUFFIX: &str = ".envelope";

/// Failure to use the snapshot directory.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation failed.
    #[error("snapshot `{path}`: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The envelope's ruleset cannot be a file name.
    #[error(transparent)]
    Rejected(#[from] RejectReason),
}

fn io(path: &Path, e: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// What [`SnapshotDir::load`] found.
#[derive(Debug, Default)]
pub struct SnapshotLoad {
    /// Verified envelopes, sorted by ruleset.
    pub envelopes: Vec<Envelope>,
    /// Files refused, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

/// A directory of last-good envelopes.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// Opens (creating if needed) a snapshot directory.
    pub fn open(dir: &Path) -> Result<SnapshotDir, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, ruleset: &str) -> PathBuf {
        self.dir.join(format!("{ruleset}{SUFFIX}"))
    }

    /// Stores an envelope as the ruleset's last good one (atomic, fsynced).
    pub fn store(&self, env: &Envelope) -> Result<(), SnapshotError> {
        if !valid_ruleset(&env.ruleset) {
            return Err(RejectReason::BadRuleset(env.ruleset.clone()).into());
        }
        let path = self.path_of(&env.ruleset);
        let tmp = self.dir.join(format!(
            ".{}{SUFFIX}.tmp-{}",
            env.ruleset,
            std::process::id()
        ));
        let written = (|| {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(&env.encode()).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
        })();
        if written.is_err() {
            // A full volume must not keep a partial file taking the space the next try needs.
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))
    }

    /// Loads and verifies every snapshot; bad files are reported, not loaded. Temporary files
    /// left by a write that was interrupted (a crash, a full volume) are removed first.
    pub fn load(&self, trusted: &TrustedKeys) -> Result<SnapshotLoad, SnapshotError> {
        let mut out = SnapshotLoad::default();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.contains(&format!("{SUFFIX}.tmp-")) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| io(&self.dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(SUFFIX) && !n.starts_with('.'))
            })
            .collect();
        files.sort();
        for path in files {
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(SUFFIX))
                .unwrap_or_default()
                .to_owned();
            // The file name plays the record key: the same check as a record on the topic.
            let checked = crate::read_bounded(&path, MAX_RECORD_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    Envelope::from_record(Some(named.as_bytes()), &bytes, trusted).map_err(|e| {
                        match e {
                            RejectReason::KeyMismatch { ruleset, .. } => {
                                format!("file is named for ruleset `{named}` but holds `{ruleset}`")
                            }
                            e => e.to_string(),
                        }
                    })
                });
            match checked {
                Ok(env) => out.envelopes.push(env),
                Err(reason) => out.rejected.push((path, reason)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::draft;
    use crate::KeyPair;

    fn setup() -> (tempfile::TempDir, SnapshotDir, KeyPair, TrustedKeys) {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotDir::open(&dir.path().join("snapshots")).unwrap();
        let key = KeyPair::generate().unwrap();
        let trusted = TrustedKeys::new([key.public()]);
        (dir, snap, key, trusted)
    }

    #[test]
    fn stores_and_loads_the_last_good_envelope() {
        let (_d, snap, key, trusted) = setup();
        snap.store(&Envelope::sign(draft(1, b"v1"), &key)).unwrap();
        let v2 = Envelope::sign(draft(2, b"v2"), &key);
        snap.store(&v2).unwrap();
        let load = snap.load(&trusted).unwrap();
        assert_eq!(load.envelopes, vec![v2]);
        assert!(load.rejected.is_empty());
    }

    #[test]
    fn corrupt_tampered_and_misnamed_snapshots_are_reported_not_loaded() {
        let (d, snap, key, trusted) = setup();
        let env = Envelope::sign(draft(1, b"v1"), &key);
        snap.store(&env).unwrap();
        let dir = d.path().join("snapshots");
        let good = std::fs::read(dir.join("checkout.envelope")).unwrap();
        // Truncated.
        std::fs::write(dir.join("truncated.envelope"), &good[..good.len() / 2]).unwrap();
        // A flipped byte inside the module (still decodes; the hash no longer matches).
        let mut other = draft(1, b"v1");
        other.ruleset = "flipped".into();
        let mut flipped = Envelope::sign(other, &key).encode();
        let at = flipped.windows(2).position(|w| w == b"v1").unwrap();
        flipped[at] = b'X';
        std::fs::write(dir.join("flipped.envelope"), &flipped).unwrap();
        // A valid envelope under another ruleset's name.
        std::fs::write(dir.join("pricing.envelope"), &good).unwrap();
        // A leftover temporary file from a crash mid-write is ignored.
        std::fs::write(dir.join(".checkout.envelope.tmp-1"), b"partial").unwrap();
        let load = snap.load(&trusted).unwrap();
        assert_eq!(load.envelopes, vec![env]);
        let reasons: Vec<String> = load
            .rejected
            .iter()
            .map(|(p, r)| format!("{}: {r}", p.display()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:#?}");
        assert!(reasons
            .iter()
            .any(|r| r.contains("flipped.envelope") && r.contains("sha256")));
        assert!(reasons
            .iter()
            .any(|r| r.contains("truncated.envelope") && r.contains("not an envelope")));
        assert!(reasons
            .iter()
            .any(|r| r.contains("pricing.envelope") && r.contains("named for ruleset")));
    }

    #[test]
    fn an_untrusted_snapshot_is_not_loaded() {
        let (_d, snap, key, _trusted) = setup();
        snap.store(&Envelope::sign(draft(1, b"v1"), &key)).unwrap();
        let other = TrustedKeys::new([KeyPair::generate().unwrap().public()]);
        let load = snap.load(&other).unwrap();
        assert!(load.envelopes.is_empty());
        assert!(load.rejected[0].1.contains("not trusted"));
    }

    #[test]
    fn a_hostile_ruleset_name_never_becomes_a_path() {
        let (_d, snap, key, _t) = setup();
        let mut d = draft(1, b"v1");
        d.ruleset = "../../escape".into();
        let err = snap.store(&Envelope::sign(d, &key)).unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    }
}
