//! A compiled module and its instance pool.

use std::sync::atomic::{AtomicU64, Ordering};

use flagforge_protocol::{abi, decode, manifest::ManifestReply, Context, Manifest, Resolution};
use flagforge_runtime::{options, InputRegion, Prepared, Runtime, EMPTY_CONTEXT};
use sha2::{Digest, Sha256};
use wasmtime::{
    Engine, Instance, InstancePre, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc,
};

use crate::cache::{CacheReject, CompiledCache, Found};
pub use crate::pool::Counter;
use crate::pool::Pool;
use crate::shared;
use crate::{Limits, LoadError};

pub use flagforge_runtime::CallError;

/// Counters a host exports as metrics.
#[derive(Debug, Default)]
pub struct ModuleStats {
    /// Calls answered by the module.
    pub calls: Counter,
    /// Instances discarded after a trap or limit hit.
    pub discarded_instances: AtomicU64,
    /// Calls answered with a host-side fallback.
    pub fallbacks: Counter,
    /// Instances created.
    pub instances_created: AtomicU64,
    /// Calls answered with the module's own answer remembered at load, for flags whose answer
    /// reads no context attribute (no call into the module).
    pub constant_answers: Counter,
}

struct StoreData {
    limits: StoreLimits,
}

struct Exports {
    memory: Memory,
    abi_version: TypedFunc<(), u32>,
    input: TypedFunc<u32, u32>,
    evaluate: TypedFunc<(u32, u32, u32), u64>,
    evaluate_all: TypedFunc<(u32, u32), u64>,
    manifest: TypedFunc<(), u64>,
}

struct Slot {
    store: Store<StoreData>,
    exports: Exports,
    /// The instance's input region as last reserved.
    input: InputRegion,
}

/// A validated, compiled module ready to evaluate from many threads.
pub struct LoadedModule {
    engine: Engine,
    pre: InstancePre<StoreData>,
    limits: Limits,
    /// Addressing, encoding, expansion and remembered answers (`flagforge-runtime`).
    runtime: Runtime,
    sha256: [u8; 32],
    /// Under which key the compiled code is cached: the template's for a split module.
    cache_key: [u8; 32],
    /// What each instance of a split module needs written after instantiating its template.
    patch: Option<shared::DataPatch>,
    size: usize,
    /// Idle instances: lock-free bounded queues, one per thread stripe, so threads neither
    /// wait on each other to take or return one nor write the same memory doing it.
    pool: Pool<Box<Slot>>,
    stats: ModuleStats,
    compiled_from: CompiledFrom,
}

/// Where a loaded module's native code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled at load (no cache, or no file for this module).
    Compiled,
    /// Read from the compiled-module cache.
    Cache,
    /// Shared with a module this host loaded before: the same code, other data (a new
    /// version of a ruleset built by the same flagforge). Nothing was compiled.
    Shared,
    /// Compiled because the cache file was refused.
    CacheRejected(CacheReject),
}

fn typed<P, R>(
    instance: &Instance,
    store: &mut Store<StoreData>,
    name: &'static str,
) -> Result<TypedFunc<P, R>, LoadError>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map_err(|e| LoadError::BadExport {
            name,
            reason: format!("{e:#}"),
        })
}

/// What a call into the guest failed with, classified.
fn classify(err: wasmtime::Error, fuel: u64) -> CallError {
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel(fuel),
        Some(Trap::AllocationTooLarge) => CallError::OutOfMemory,
        Some(trap) => CallError::Trap(trap.to_string()),
        None => {
            let msg = format!("{err:#}");
            if msg.contains("memory") && msg.contains("grow") {
                CallError::OutOfMemory
            } else {
                CallError::Trap(msg)
            }
        }
    }
}

impl LoadedModule {
    pub(crate) fn load(
        engine: &Engine,
        limits: Limits,
        cache: Option<&CompiledCache>,
        templates: &shared::Templates,
        bytes: &[u8],
    ) -> Result<Self, LoadError> {
        if bytes.len() > limits.max_module_bytes {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit: limits.max_module_bytes,
            });
        }
        if bytes.get(..4) != Some(b"\0asm".as_slice()) {
            return Err(LoadError::BadMagic);
        }
        let version = bytes
            .get(4..8)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| LoadError::Invalid("truncated header".into()))?;
        if version != 1 {
            return Err(LoadError::UnsupportedBinaryVersion(version));
        }
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        // A module that splits into code and data is compiled as its template, which every
        // version with the same code shares (`shared.rs`); any other is compiled whole.
        let split = shared::split(bytes);
        let (code, key) = match &split {
            Some(s) => (s.template.as_slice(), s.key),
            None => (bytes, sha256),
        };
        let compile =
            || Module::new(engine, code).map_err(|e| LoadError::Invalid(format!("{e:#}")));
        let shared_code = split.as_ref().and_then(|s| templates.get(&s.key));
        let (module, source) = match (shared_code, cache.map(|c| (c, c.find(engine, &key)))) {
            (Some(module), _) => (module, CompiledFrom::Shared),
            (None, None) => (compile()?, CompiledFrom::Compiled),
            (None, Some((_, Found::Hit(module)))) => (module, CompiledFrom::Cache),
            (None, Some((_, found))) => {
                let module = compile()?;
                let source = match found {
                    Found::Rejected(reason) => CompiledFrom::CacheRejected(reason),
                    _ => CompiledFrom::Compiled,
                };
                (module, source)
            }
        };
        if let Some(import) = module.imports().next() {
            return Err(LoadError::HasImports(format!(
                "{}::{}",
                import.module(),
                import.name()
            )));
        }
        // A version 1 module (ABI.md, "Version 1") has `ff_alloc` where version 2 has
        // `ff_input`: name the version rather than a missing export.
        if module.get_export(abi::EXPORT_INPUT).is_none() && module.get_export("ff_alloc").is_some()
        {
            return Err(LoadError::UnsupportedAbi {
                found: 1,
                expected: abi::ABI_VERSION,
            });
        }
        for name in abi::REQUIRED_EXPORTS {
            if module.get_export(name).is_none() {
                return Err(LoadError::BadExport {
                    name,
                    reason: "not exported".into(),
                });
            }
        }
        let pre = Linker::new(engine)
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let placeholder = Manifest {
            abi_version: 0,
            ruleset: String::new(),
            compiler: String::new(),
            context: vec![],
            flags: vec![],
            targeting_key: flagforge_protocol::TARGETING_KEY.into(),
        };
        let mut loaded = LoadedModule {
            engine: engine.clone(),
            pre,
            limits,
            runtime: Runtime::new(placeholder, limits.max_context_bytes),
            sha256,
            cache_key: key,
            patch: split.map(|s| s.patch),
            compiled_from: source,
            size: bytes.len(),
            pool: Pool::new(limits.max_idle_instances.max(1)),
            stats: ModuleStats::default(),
        };
        let mut slot = loaded.new_slot()?;
        slot.store
            .set_fuel(limits.fuel_per_load)
            .map_err(|e| LoadError::Unusable(e.to_string()))?;
        let found = slot
            .exports
            .abi_version
            .call(&mut slot.store, ())
            .map_err(|e| LoadError::Unusable(classify(e, limits.fuel_per_load).to_string()))?;
        if found != abi::ABI_VERSION {
            return Err(LoadError::UnsupportedAbi {
                found,
                expected: abi::ABI_VERSION,
            });
        }
        let reply = Self::run(&mut slot, limits.fuel_per_load, |store, ex| {
            ex.manifest.call(store, ())
        })
        .and_then(|(ptr, len)| Ok(Self::output(&slot, ptr, len)?.to_vec()))
        .map_err(|e| LoadError::Unusable(e.to_string()))?;
        let manifest = match decode::<ManifestReply>(&reply) {
            Ok(ManifestReply::Ok(m)) => m,
            Ok(ManifestReply::Error(msg)) => return Err(LoadError::NoRules(msg)),
            Err(e) => return Err(LoadError::BadManifest(e.to_string())),
        };
        if manifest.abi_version != abi::ABI_VERSION {
            return Err(LoadError::UnsupportedAbi {
                found: manifest.abi_version,
                expected: abi::ABI_VERSION,
            });
        }
        loaded.runtime = Runtime::new(manifest, limits.max_context_bytes);
        loaded.checkin(slot);
        if loaded.patch.is_some() {
            templates.insert(key, loaded.pre.module().clone());
        }
        // The answers of flags that read nothing cannot change: ask once, remember.
        for flag in loaded.runtime.constant_flags() {
            let answer = loaded.call(flag, EMPTY_CONTEXT, 0);
            if let Ok(r) = answer {
                loaded.runtime.remember(flag, r);
            }
        }
        Ok(loaded)
    }

    /// Writes this module's native code to `cache` unless it came from there. Called only
    /// once the module has passed every check of `load` (and, in a registry, once its
    /// snapshot is on disk: the snapshot matters more than the cache when space runs out).
    pub(crate) fn persist(&self, cache: &CompiledCache) {
        if self.compiled_from != CompiledFrom::Cache {
            cache.store(&self.cache_key, self.pre.module());
        }
    }

    fn new_slot(&self) -> Result<Box<Slot>, LoadError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, StoreData { limits });
        store.limiter(|d| &mut d.limits);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let memory =
            instance
                .get_memory(&mut store, abi::EXPORT_MEMORY)
                .ok_or(LoadError::BadExport {
                    name: abi::EXPORT_MEMORY,
                    reason: "not a memory".into(),
                })?;
        if let Some(patch) = &self.patch {
            // The module's own memory, as instantiating it would leave it (`shared.rs`).
            let grow = patch.min_pages.saturating_sub(memory.size(&store));
            memory
                .grow(&mut store, grow)
                .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
            for (at, data) in &patch.segments {
                memory
                    .write(&mut store, *at as usize, data)
                    .map_err(|e| LoadError::Instantiate(format!("data segment at {at}: {e}")))?;
            }
        }
        let exports = Exports {
            memory,
            abi_version: typed(&instance, &mut store, abi::EXPORT_ABI_VERSION)?,
            input: typed(&instance, &mut store, abi::EXPORT_INPUT)?,
            evaluate: typed(&instance, &mut store, abi::EXPORT_EVALUATE)?,
            evaluate_all: typed(&instance, &mut store, abi::EXPORT_EVALUATE_ALL)?,
            manifest: typed(&instance, &mut store, abi::EXPORT_MANIFEST)?,
        };
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        // Boxed: an instance moves in and out of the pool on every call, as one pointer.
        let mut slot = Box::new(Slot {
            store,
            exports,
            input: InputRegion::default(),
        });
        // Ready the instance under the load budget: the first call decodes the module's rules
        // (flag number u32::MAX does not exist: the answer is a small FLAG_NOT_FOUND record).
        Self::run(&mut slot, self.limits.fuel_per_load, |store, ex| {
            ex.evaluate.call(store, (u32::MAX, 0, 0))
        })
        .map_err(|e| LoadError::Unusable(format!("readying an instance: {e}")))?;
        Ok(slot)
    }

    fn checkout(&self) -> Result<Box<Slot>, CallError> {
        match self.pool.pop() {
            Some(slot) => Ok(slot),
            None => self
                .new_slot()
                .map_err(|e| CallError::Instantiate(e.to_string())),
        }
    }

    fn checkin(&self, slot: Box<Slot>) {
        if self.limits.max_idle_instances > 0 {
            // A full queue hands the instance back: it is dropped.
            let _ = self.pool.push(slot);
        }
    }

    /// Writes `context` into the instance's input region, reserving a larger one first when
    /// it does not fit (the region only grows; most calls reserve nothing).
    fn write_input(&self, slot: &mut Slot, context: &[u8]) -> Result<u32, CallError> {
        let len = u32::try_from(context.len()).map_err(|_| CallError::OutOfMemory)?;
        let Slot {
            store,
            exports,
            input,
        } = slot;
        let base = input.fit(len, |cap| {
            exports
                .input
                .call(&mut *store, cap)
                .map_err(|e| classify(e, self.limits.fuel_per_call))
        })?;
        let start = base as usize;
        exports
            .memory
            .data_mut(store)
            .get_mut(start..start + context.len())
            .ok_or_else(|| CallError::BadResult("input region lies outside memory".into()))?
            .copy_from_slice(context);
        Ok(len)
    }

    /// Runs an export with `fuel` and returns the location it answered.
    fn run(
        slot: &mut Slot,
        fuel: u64,
        f: impl FnOnce(&mut Store<StoreData>, &Exports) -> wasmtime::Result<u64>,
    ) -> Result<(u32, u32), CallError> {
        slot.store
            .set_fuel(fuel)
            .map_err(|e| CallError::Trap(e.to_string()))?;
        let packed = f(&mut slot.store, &slot.exports).map_err(|e| classify(e, fuel))?;
        Ok(abi::unpack(packed))
    }

    /// The bytes at an answered location, in the instance's memory.
    fn output(slot: &Slot, ptr: u32, len: u32) -> Result<&[u8], CallError> {
        slot.exports
            .memory
            .data(&slot.store)
            .get(ptr as usize..ptr as usize + len as usize)
            .ok_or_else(|| CallError::BadResult(format!("answer {ptr}+{len} lies outside memory")))
    }

    /// One call on a pooled instance: the context into the input region, `ff_evaluate`
    /// (`flag` `Some`) or `ff_evaluate_all`, then `read` over the answer where it lies. The
    /// instance is discarded on any failure of the module.
    fn with_slot<R>(
        &self,
        flag: Option<u32>,
        context: &[u8],
        options: u32,
        read: impl FnOnce(&[u8]) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let mut slot = self.checkout()?;
        let fuel = self.limits.fuel_per_call;
        let result = self.write_input(&mut slot, context).and_then(|len| {
            let (ptr, out) = Self::run(&mut slot, fuel, |store, ex| match flag {
                Some(f) => ex.evaluate.call(store, (f, len, options)),
                None => ex.evaluate_all.call(store, (len, options)),
            })?;
            read(Self::output(&slot, ptr, out)?)
        });
        match &result {
            Err(e) if e.discards_instance() || matches!(e, CallError::Instantiate(_)) => {
                // Drop the instance: whatever state the failure left is never seen again.
                self.stats
                    .discarded_instances
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.stats.calls.incr();
                self.checkin(slot);
            }
        }
        result
    }

    /// Evaluates flag number `flag` against a positional context and expands the answer.
    fn call(&self, flag: u32, context: &[u8], options: u32) -> Result<Resolution, CallError> {
        self.with_slot(Some(flag), context, options, |record| {
            self.runtime.finish(flag, record)
        })
    }

    /// Raw ABI call for one flag: a positional context in, the module's result record out.
    pub fn evaluate_record(
        &self,
        flag: u32,
        context: &[u8],
        options: u32,
    ) -> Result<Vec<u8>, CallError> {
        self.runtime.check_size(context.len())?;
        self.with_slot(Some(flag), context, options, |r| Ok(r.to_vec()))
    }

    /// Raw ABI call for every flag: a positional context in, one record per flag out.
    pub fn evaluate_all_records(&self, context: &[u8], options: u32) -> Result<Vec<u8>, CallError> {
        self.runtime.check_size(context.len())?;
        self.with_slot(None, context, options, |r| Ok(r.to_vec()))
    }

    fn answer(&self, key: &str, prepared: Prepared, explain: bool) -> Resolution {
        match prepared {
            Prepared::Call { flag, context } => self
                .call(flag, &context, options(explain))
                .unwrap_or_else(|e| self.fallback(key, &e)),
            Prepared::Constant(r) => {
                self.stats.constant_answers.incr();
                r
            }
            Prepared::Answer(r) => r,
            Prepared::Refused(r, _) => {
                self.stats.fallbacks.incr();
                r
            }
        }
    }

    fn fallback(&self, key: &str, err: &CallError) -> Resolution {
        self.stats.fallbacks.incr();
        self.runtime.fallback(key, err)
    }

    /// Evaluates one flag. Never fails: problems become a result with reason `ERROR`.
    ///
    /// Only the attributes the flag's answer can depend on are encoded and sent (the
    /// manifest's `reads`, with prerequisites'): the rest of a large context costs nothing.
    /// A flag whose answer reads nothing is answered without a call.
    pub fn evaluate(&self, key: &str, ctx: &Context, explain: bool) -> Resolution {
        self.answer(key, self.runtime.prepare(key, ctx, explain), explain)
    }

    /// Evaluates one flag from canonical context bytes (`ABI.md`, "Context"); bytes that do
    /// not decode answer `PARSE_ERROR`, as the module would.
    pub fn evaluate_canonical(&self, key: &str, canonical: &[u8], explain: bool) -> Resolution {
        self.answer(
            key,
            self.runtime.prepare_canonical(key, canonical, explain),
            explain,
        )
    }

    /// Evaluates every flag, in declaration order, in one call.
    pub fn evaluate_all(&self, ctx: &Context, explain: bool) -> Vec<Resolution> {
        let out = self.runtime.encode(None, ctx).and_then(|context| {
            self.with_slot(None, &context, options(explain), |records| {
                self.runtime.finish_all(records)
            })
        });
        match out {
            Ok(results) => results,
            // One call for every flag failed (an oversized or unencodable attribute, a limit
            // hit): answer each flag from the attributes it reads, so only the flags that read
            // the offending input fail, as they would one by one.
            Err(_) => self
                .runtime
                .manifest()
                .flags
                .iter()
                .map(|f| self.evaluate(&f.key, ctx, explain))
                .collect(),
        }
    }

    /// Evaluates every flag from canonical context bytes.
    pub fn evaluate_all_canonical(&self, canonical: &[u8], explain: bool) -> Vec<Resolution> {
        let out = self.runtime.translate(None, canonical).and_then(|context| {
            self.with_slot(None, &context, options(explain), |records| {
                self.runtime.finish_all(records)
            })
        });
        out.unwrap_or_else(|e| {
            self.stats.fallbacks.incr();
            self.runtime.fallback_all(&e)
        })
    }

    /// The context members `key`'s answer can depend on (its own reads and its
    /// prerequisites', and `targetingKey` where it stands in for one): what a host reads from
    /// a context for it.
    pub fn answer_reads(&self, key: &str) -> impl Iterator<Item = &str> {
        let layout = self.runtime.layout();
        layout
            .flag(key)
            .into_iter()
            .flat_map(|flag| layout.plan(Some(flag)).members())
    }

    /// What the module reports about itself.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        self.runtime.manifest()
    }

    /// sha256 of the module bytes: the module's identity.
    #[must_use]
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The key of this module's native code in the compiled-module cache: the sha256 of the
    /// code compiled, which for a module split into code and data is its template (shared by
    /// every version built by the same flagforge), else the module's own sha256.
    #[must_use]
    pub fn cache_key(&self) -> [u8; 32] {
        self.cache_key
    }

    /// sha256 as lowercase hex.
    #[must_use]
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Where the module's native code came from (compiled now, or the cache).
    #[must_use]
    pub fn compiled_from(&self) -> &CompiledFrom {
        &self.compiled_from
    }

    /// Module size in bytes.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &ModuleStats {
        &self.stats
    }
}
