//! Hosts flagforge modules in wasmtime.
//!
//! Core concepts (as in wasmtime): a [`Host`] owns the long-lived `Engine` and the limits;
//! [`Host::load`] validates and compiles a module once into a [`LoadedModule`], which answers
//! evaluations from many threads through a pool of instances. Each call runs with a fuel
//! budget and a memory cap; an instance that traps or hits a limit is discarded (never reused)
//! and the call answers the flag's `on_error` variant with reason `ERROR`.
//!
//! This crate never evaluates rules itself: it loads, limits, marshals and pools. Semantics
//! live in evaluator-core, compiled into the module.

//!
//! ```no_run
//! use wasm_host::{Host, Limits};
//! use flagforge_protocol::{Context, Value};
//!
//! let host = Host::new(Limits::default())?;
//! let module = host.load(&std::fs::read("checkout.wasm")?)?;
//! let mut ctx = Context::new();
//! ctx.insert("market".into(), Value::from("FR"));
//! let r = module.evaluate("FulfillmentRoutingMode", &ctx, false);
//! println!("{} -> {:?} ({})", r.key, r.variant, r.reason.as_str());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod module;
mod pool;
mod reuse;
mod shared;

pub use cache::{CacheReject, CacheStats, CompiledCache};
pub use module::{CallError, CompiledFrom, Counter, LoadedModule, ModuleStats};
pub use reuse::{ReuseStats, CODE_REUSE_BYTES};

use flagforge_protocol::limits;
use wasmtime::{Config, Engine, OptLevel};

/// Bounds applied to every module and call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, Wasm instructions) one evaluation call may burn.
    pub fuel_per_call: u64,
    /// Fuel for readying an instance (the module decodes its rules once per instance) and
    /// for reading the manifest: large rulesets (10,000 flags, 100,000-member segments) need
    /// far more than one evaluation, and this work is off the request path.
    pub fuel_per_load: u64,
    /// Most linear memory one instance may grow to (bytes).
    pub memory_bytes: usize,
    /// Largest module accepted (bytes).
    pub max_module_bytes: usize,
    /// Largest encoded context sent into a module (bytes).
    pub max_context_bytes: usize,
    /// Most idle instances kept per module.
    pub max_idle_instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: 50_000_000,
            fuel_per_load: 1_000_000_000,
            memory_bytes: 64 * 1024 * 1024,
            max_module_bytes: limits::MAX_MODULE_BYTES,
            max_context_bytes: limits::MAX_CONTEXT_BYTES,
            max_idle_instances: 64,
        }
    }
}

/// Why a module was refused. Each check has its own variant so callers can count them.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Larger than [`Limits::max_module_bytes`].
    #[error("module is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Module size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Does not start with the Wasm magic bytes.
    #[error("not a WebAssembly module (bad magic bytes)")]
    BadMagic,
    /// A binary format version other than 1 (for example a component).
    #[error("unsupported WebAssembly binary version {0}; expected a core module (version 1)")]
    UnsupportedBinaryVersion(u32),
    /// wasmtime refused it (truncated, malformed, invalid).
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The module imports something; flagforge modules import nothing.
    #[error("module imports `{0}`; flagforge modules must import nothing")]
    HasImports(String),
    /// A required export is missing or has the wrong type.
    #[error("module export `{name}` is missing or has the wrong type: {reason}")]
    BadExport {
        /// Export name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The module implements another ABI version.
    #[error("module implements ABI version {found}; this host supports version {expected}")]
    UnsupportedAbi {
        /// Version reported.
        found: u32,
        /// Version supported.
        expected: u32,
    },
    /// The module trapped or ran out of its load budget while reporting its version or
    /// manifest, or while readying an instance.
    #[error("module cannot serve: {0}")]
    Unusable(String),
    /// The module says it cannot serve (its embedded rules are missing or corrupt).
    #[error("module cannot serve: {0}")]
    NoRules(String),
    /// The manifest does not decode.
    #[error("module manifest is unreadable: {0}")]
    BadManifest(String),
    /// Instantiation failed (e.g. initial memory above the cap).
    #[error("module cannot be instantiated: {0}")]
    Instantiate(String),
}

impl LoadError {
    /// The stable name of this refusal, the same on every host (`flagforge_runtime::load`,
    /// `corpus/host`); also the metrics label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        use flagforge_runtime::load;
        match self {
            LoadError::TooLarge { .. } => load::TOO_LARGE,
            LoadError::BadMagic => load::BAD_MAGIC,
            LoadError::UnsupportedBinaryVersion(_) | LoadError::Invalid(_) => load::INVALID_MODULE,
            LoadError::HasImports(_) => load::IMPORTS,
            LoadError::BadExport { .. } => load::MISSING_EXPORT,
            LoadError::UnsupportedAbi { .. } => load::ABI_VERSION,
            LoadError::Unusable(_) => load::UNUSABLE,
            LoadError::NoRules(_) => load::NO_RULES,
            LoadError::BadManifest(_) => load::BAD_MANIFEST,
            LoadError::Instantiate(_) => load::INSTANTIATE,
        }
    }
}

/// Failure to set up the engine.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the wasmtime engine: {0}")]
pub struct EngineError(String);

/// A long-lived wasmtime engine with the limits applied to modules it loads.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    limits: Limits,
    cache: Option<std::sync::Arc<CompiledCache>>,
    reuse: std::sync::Arc<reuse::CodeReuse>,
    templates: std::sync::Arc<shared::Templates>,
}

impl Host {
    /// Creates an engine configured for flagforge modules (fuel metering on). The engine
    /// reuses the machine code of functions it compiled before (see [`Host::reuse_stats`]):
    /// a new version of a ruleset compiles without generating its evaluator's code again.
    pub fn new(limits: Limits) -> Result<Host, EngineError> {
        let reuse = std::sync::Arc::new(reuse::CodeReuse::new(CODE_REUSE_BYTES));
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .cranelift_opt_level(OptLevel::Speed)
            .enable_incremental_compilation(reuse.clone())
            .map_err(|e| EngineError(e.to_string()))?;
        let engine = Engine::new(&config).map_err(|e| EngineError(e.to_string()))?;
        Ok(Host {
            engine,
            limits,
            cache: None,
            reuse,
            templates: std::sync::Arc::default(),
        })
    }

    /// How many compiled functions were reused from an earlier compile, and how many had to
    /// be generated.
    #[must_use]
    pub fn reuse_stats(&self) -> &ReuseStats {
        self.reuse.stats()
    }

    /// Keeps compiled modules in `dir` (see [`CompiledCache`]): a module loaded again (a
    /// restart from the snapshot directory) skips compilation. Files are checked before use;
    /// a stale, foreign or corrupt one is recompiled and rewritten.
    pub fn with_compiled_cache(mut self, dir: &std::path::Path) -> std::io::Result<Host> {
        self.cache = Some(std::sync::Arc::new(CompiledCache::open(dir, &self.engine)?));
        Ok(self)
    }

    /// The compiled-module cache, if any.
    #[must_use]
    pub fn compiled_cache(&self) -> Option<&CompiledCache> {
        self.cache.as_deref()
    }

    /// The limits applied.
    #[must_use]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates and compiles a module (or takes its native code from the compiled-module
    /// cache), and writes it to the cache once it passed every check. See [`LoadError`] for
    /// each check.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedModule, LoadError> {
        let loaded = self.compile(bytes)?;
        self.remember(&loaded);
        Ok(loaded)
    }

    /// [`Self::load`] without writing the cache: for a caller that must persist something
    /// more important first (a registry writes the snapshot, then calls [`Self::remember`]).
    pub fn compile(&self, bytes: &[u8]) -> Result<LoadedModule, LoadError> {
        LoadedModule::load(
            &self.engine,
            self.limits,
            self.cache.as_deref(),
            &self.templates,
            bytes,
        )
    }

    /// Writes a loaded module's native code to the compiled-module cache (if there is one and
    /// the module did not come from it). Failures are counted in [`CacheStats`], not fatal.
    pub fn remember(&self, module: &LoadedModule) {
        if let Some(cache) = &self.cache {
            module.persist(cache);
        }
    }
}
