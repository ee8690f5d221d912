//! The compiled-module cache: wasmtime's native artifacts on disk, keyed and checked so a
//! stale, foreign or corrupt file is recompiled, never trusted blindly.
//!
//! One file per compiled module, `<sha256 hex of the compiled .wasm>.cwasm` — for a module
//! split into code and data (`shared.rs`) that is its template, so every version of a
//! ruleset built by the same flagforge shares one file — holding a fixed header then the
//! bytes of `Module::serialize`:
//!
//! | bytes | content                                                                 |
//! |-------|-------------------------------------------------------------------------|
//! | 8     | `FFCWASM1`                                                              |
//! | 32    | sha256 of the `.wasm` module the artifact was compiled from              |
//! | 32    | engine fingerprint: sha256 of wasmtime's compatibility hash (its version, target, compiler flags, tunables, features) |
//! | 32    | sha256 of the artifact bytes that follow                                |
//!
//! A file is used only when all three match: the module being loaded, this engine, and its
//! own content. Anything else is a miss with a reason ([`CacheReject`]), the module is
//! compiled and the file rewritten (written to a temporary name, then renamed).
//!
//! Trust: the artifact is native code. Its checksum proves it is the file this host wrote,
//! not that nobody with write access to the directory replaced both. The directory must be
//! as private as the service's own binary; `Host` uses the cache only when asked to.

use std::fs;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"FFCWASM1";
/// Largest cache file read.
const MAX_ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;

fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = fs::File::open(path)?;
    if file.metadata()?.len() > limit {
        return Err(std::io::Error::other("too large"));
    }
    let mut out = Vec::new();
    file.take(limit).read_to_end(&mut out)?;
    Ok(out)
}
const HEADER: usize = 8 + 32 + 32 + 32;

/// Why a cache file was not used (it is then recompiled and rewritten).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheReject {
    /// Shorter than the header, or the magic bytes differ.
    #[error("not a flagforge compiled-module file")]
    BadHeader,
    /// Compiled from other module bytes (a misnamed or copied file).
    #[error("compiled from another module")]
    OtherModule,
    /// Compiled by another wasmtime version, target or configuration.
    #[error("compiled by another engine (wasmtime version, target or settings differ)")]
    OtherEngine,
    /// The artifact bytes do not match their checksum (truncated or altered).
    #[error("artifact checksum mismatch")]
    Corrupt,
    /// wasmtime refused the artifact.
    #[error("wasmtime refused the artifact: {0}")]
    Refused(String),
}

impl CacheReject {
    /// A stable short name for metrics labels.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            CacheReject::BadHeader => "bad_header",
            CacheReject::OtherModule => "other_module",
            CacheReject::OtherEngine => "other_engine",
            CacheReject::Corrupt => "corrupt",
            CacheReject::Refused(_) => "refused",
        }
    }
}

/// Counters of cache use, exported as metrics by hosts.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Modules loaded from a valid cache file.
    pub hits: AtomicU64,
    /// Modules with no cache file (compiled, then written).
    pub misses: AtomicU64,
    /// Cache files refused (see [`CacheReject`]); the module was compiled instead.
    pub rejected: AtomicU64,
    /// Cache files that could not be written (the module still serves).
    pub write_failures: AtomicU64,
}

/// A directory of compiled modules for one engine.
#[derive(Debug)]
pub struct CompiledCache {
    dir: PathBuf,
    fingerprint: [u8; 32],
    stats: CacheStats,
}

/// The result of looking a module up.
pub(crate) enum Found {
    Hit(Module),
    Miss,
    Rejected(CacheReject),
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` is used: the fingerprint is read from the full digest.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// What the engine's artifacts are compatible with, as a digest.
fn fingerprint(engine: &Engine) -> [u8; 32] {
    let mut h = Sha256Hasher(Sha256::new());
    h.write(MAGIC);
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    h.0.finalize().into()
}

impl CompiledCache {
    /// A cache in `dir` (created if needed) for artifacts of `engine`. Temporary files left by
    /// an interrupted write are removed.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompiledCache> {
        fs::create_dir_all(dir)?;
        if !fs::metadata(dir)?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            fingerprint: fingerprint(engine),
            stats: CacheStats::default(),
        })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Use counters.
    #[must_use]
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The file for a module.
    #[must_use]
    pub fn path_for(&self, module_sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex::encode(module_sha256)))
    }

    /// Looks up the artifact of `module_sha256`, checking it before wasmtime sees it.
    pub(crate) fn find(&self, engine: &Engine, module_sha256: &[u8; 32]) -> Found {
        // Bounded: a module's native code is a few times its 8 MiB limit at most.
        let found = match read_bounded(&self.path_for(module_sha256), MAX_ARTIFACT_BYTES) {
            Err(_) => Found::Miss,
            Ok(file) => match self.check(&file, module_sha256) {
                Err(reject) => Found::Rejected(reject),
                Ok(artifact) => match deserialize(engine, artifact) {
                    Ok(module) => Found::Hit(module),
                    Err(e) => Found::Rejected(CacheReject::Refused(format!("{e:#}"))),
                },
            },
        };
        let counter = match &found {
            Found::Hit(_) => &self.stats.hits,
            Found::Miss => &self.stats.misses,
            Found::Rejected(_) => &self.stats.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn check<'a>(&self, file: &'a [u8], module_sha256: &[u8; 32]) -> Result<&'a [u8], CacheReject> {
        let (header, artifact) = file
            .split_at_checked(HEADER)
            .ok_or(CacheReject::BadHeader)?;
        let (magic, rest) = header.split_at(8);
        let (module, rest) = rest.split_at(32);
        let (engine, checksum) = rest.split_at(32);
        if magic != MAGIC {
            return Err(CacheReject::BadHeader);
        }
        if module != module_sha256 {
            return Err(CacheReject::OtherModule);
        }
        if engine != self.fingerprint {
            return Err(CacheReject::OtherEngine);
        }
        if Sha256::digest(artifact).as_slice() != checksum {
            return Err(CacheReject::Corrupt);
        }
        Ok(artifact)
    }

    /// Writes the artifact of a freshly compiled module (temporary file, then rename, so a
    /// crash leaves either the old file or the new one). Failures are counted, not fatal.
    pub(crate) fn store(&self, module_sha256: &[u8; 32], module: &Module) {
        if self.write(module_sha256, module).is_err() {
            self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(&self, module_sha256: &[u8; 32], module: &Module) -> std::io::Result<()> {
        let artifact = module.serialize().map_err(std::io::Error::other)?;
        let path = self.path_for(module_sha256);
        let tmp = path.with_extension(format!("cwasm.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(module_sha256)?;
            file.write_all(&self.fingerprint)?;
            file.write_all(&Sha256::digest(&artifact))?;
            file.write_all(&artifact)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            // Never leave a partial file taking space (a full volume is the usual cause).
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Removes every compiled module but those of `keep` (module sha256s): a host keeps the
    /// native code of what it serves, not of every module it ever refused or replaced.
    /// Returns how many files were removed.
    pub fn prune(&self, keep: &[[u8; 32]]) -> usize {
        let keep: std::collections::HashSet<String> = keep
            .iter()
            .map(|k| format!("{}.cwasm", hex::encode(k)))
            .collect();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".cwasm") && !keep.contains(&name)
            })
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }
}

/// The one `unsafe` call outside the guest ABI crate (a reviewed exception, see
/// ARCHITECTURE.md): wasmtime cannot check that artifact bytes are well formed native code,
/// so `Module::deserialize` is `unsafe` and trusts its caller.
#[expect(
    unsafe_code,
    reason = "`Module::deserialize` is unsafe: the artifact is checked against its header first (see SAFETY)"
)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `artifact` is exactly the output of `Module::serialize` written by
    // `CompiledCache::write`: `check` has verified its sha256 against the header written
    // with it, that it was compiled from the module being loaded, and by an engine with this
    // engine's compatibility fingerprint (wasmtime also re-checks version and settings). The
    // remaining assumption, that nobody rewrote header and artifact together, is the
    // directory's access control, documented above and in ARCHITECTURE.md.
    unsafe { Module::deserialize(engine, artifact) }
}
