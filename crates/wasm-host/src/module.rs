//! A compiled module and its instance pool.

use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};

use flagforge_protocol::{
    abi, decode, manifest::ManifestReply, value::encode_context_subset, Context, ErrorCode,
    Manifest, Resolution,
};
use sha2::{Digest, Sha256};
use wasmtime::{
    Engine, Instance, InstancePre, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc,
};

use crate::cache::{CacheReject, CompiledCache, Found};
use crate::{Limits, LoadError};

/// Why a call into the module produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The module trapped (the instance was discarded).
    #[error("module trapped: {0}")]
    Trap(String),
    /// The call used its whole fuel budget (the instance was discarded).
    #[error("the call exceeded its fuel budget of {0}")]
    OutOfFuel(u64),
    /// The module could not allocate (memory cap reached).
    #[error("module is out of memory")]
    OutOfMemory,
    /// The module returned a buffer outside its memory or undecodable bytes.
    #[error("module returned a malformed result: {0}")]
    BadResult(String),
    /// The input is larger than the host accepts.
    #[error("context is {size} bytes encoded; the limit is {limit} bytes")]
    ContextTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The input could not be encoded.
    #[error("cannot encode the context: {0}")]
    Encode(String),
    /// No instance could be created for the call.
    #[error("cannot create a module instance: {0}")]
    Instantiate(String),
}

impl CallError {
    fn code(&self) -> ErrorCode {
        match self {
            CallError::ContextTooLarge { .. } | CallError::Encode(_) => ErrorCode::InvalidContext,
            _ => ErrorCode::General,
        }
    }
}

/// Counters a host exports as metrics.
#[derive(Debug, Default)]
pub struct ModuleStats {
    /// Calls answered by the module.
    pub calls: AtomicU64,
    /// Instances discarded after a trap or limit hit.
    pub discarded_instances: AtomicU64,
    /// Calls answered with a host-side fallback.
    pub fallbacks: AtomicU64,
    /// Instances created.
    pub instances_created: AtomicU64,
    /// Calls answered with the module's own answer remembered at load, for flags whose answer
    /// reads no context attribute (no call into the module).
    pub constant_answers: AtomicU64,
}

struct StoreData {
    limits: StoreLimits,
}

struct Exports {
    memory: Memory,
    abi_version: TypedFunc<(), u32>,
    alloc: TypedFunc<u32, u32>,
    free: TypedFunc<(u32, u32), ()>,
    evaluate: TypedFunc<(u32, u32, u32, u32, u32), u64>,
    evaluate_all: TypedFunc<(u32, u32, u32), u64>,
    manifest: TypedFunc<(), u64>,
}

struct Slot {
    store: Store<StoreData>,
    exports: Exports,
    /// A guest buffer reused for every call's input: (pointer, capacity).
    input: Option<(u32, u32)>,
}

/// A validated, compiled module ready to evaluate from many threads.
pub struct LoadedModule {
    engine: Engine,
    pre: InstancePre<StoreData>,
    limits: Limits,
    manifest: Manifest,
    sha256: [u8; 32],
    size: usize,
    /// Idle instances: a lock-free bounded queue, so threads never wait on each other to take
    /// or return one.
    pool: ArrayQueue<Slot>,
    stats: ModuleStats,
    /// Per flag, the context attributes its answer can depend on (its own reads and its
    /// prerequisites', transitively), from the manifest; `None` key: every flag's.
    reads: std::collections::HashMap<String, Vec<String>>,
    reads_all: Vec<String>,
    compiled_from: CompiledFrom,
    /// The module's answers, asked once at load, for flags whose answer reads no attribute
    /// (static flags, conditions on literals only): every call for them sends the module an
    /// empty context, so the answer cannot change. Explanations are never remembered.
    constant: std::collections::HashMap<String, Resolution>,
}

/// Where a loaded module's native code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompiledFrom {
    /// Compiled at load (no cache, or no file for this module).
    Compiled,
    /// Read from the compiled-module cache.
    Cache,
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
        let compile =
            || Module::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")));
        let (module, source) = match cache.map(|c| (c, c.find(engine, &sha256))) {
            None => (compile()?, CompiledFrom::Compiled),
            Some((_, Found::Hit(module))) => (module, CompiledFrom::Cache),
            Some((_, found)) => {
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
        let mut loaded = LoadedModule {
            engine: engine.clone(),
            pre,
            limits,
            manifest: Manifest {
                abi_version: 0,
                ruleset: String::new(),
                compiler: String::new(),
                context: vec![],
                flags: vec![],
                targeting_key: flagforge_protocol::TARGETING_KEY.into(),
            },
            sha256,
            compiled_from: source,
            size: bytes.len(),
            pool: ArrayQueue::new(limits.max_idle_instances.max(1)),
            stats: ModuleStats::default(),
            reads: std::collections::HashMap::new(),
            reads_all: Vec::new(),
            constant: std::collections::HashMap::new(),
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
        let reply = loaded
            .call_packed(&mut slot, limits.fuel_per_load, |store, ex| {
                ex.manifest.call(store, ())
            })
            .map_err(|e| LoadError::Unusable(e.to_string()))?;
        match decode::<ManifestReply>(&reply) {
            Ok(ManifestReply::Ok(m)) => {
                loaded.reads = m.answer_reads();
                loaded.reads_all = m.all_reads();
                loaded.manifest = m;
            }
            Ok(ManifestReply::Error(msg)) => return Err(LoadError::Unusable(msg)),
            Err(e) => return Err(LoadError::Unusable(format!("manifest: {e}"))),
        }
        if loaded.manifest.abi_version != abi::ABI_VERSION {
            return Err(LoadError::UnsupportedAbi {
                found: loaded.manifest.abi_version,
                expected: abi::ABI_VERSION,
            });
        }
        loaded.checkin(slot);
        loaded.constant = loaded.constant_answers();
        Ok(loaded)
    }

    /// Writes this module's native code to `cache` unless it came from there. Called only
    /// once the module has passed every check of `load` (and, in a registry, once its
    /// snapshot is on disk: the snapshot matters more than the cache when space runs out).
    pub(crate) fn persist(&self, cache: &CompiledCache) {
        if self.compiled_from != CompiledFrom::Cache {
            cache.store(&self.sha256, self.pre.module());
        }
    }

    fn new_slot(&self) -> Result<Slot, LoadError> {
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
        let exports = Exports {
            memory,
            abi_version: typed(&instance, &mut store, abi::EXPORT_ABI_VERSION)?,
            alloc: typed(&instance, &mut store, abi::EXPORT_ALLOC)?,
            free: typed(&instance, &mut store, abi::EXPORT_FREE)?,
            evaluate: typed(&instance, &mut store, abi::EXPORT_EVALUATE)?,
            evaluate_all: typed(&instance, &mut store, abi::EXPORT_EVALUATE_ALL)?,
            manifest: typed(&instance, &mut store, abi::EXPORT_MANIFEST)?,
        };
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let mut slot = Slot {
            store,
            exports,
            input: None,
        };
        // Ready the instance under the load budget: the first call decodes the module's rules
        // (an unknown, empty flag key: the answer is a small FLAG_NOT_FOUND, discarded).
        slot.store
            .set_fuel(self.limits.fuel_per_load)
            .map_err(|e| LoadError::Unusable(e.to_string()))?;
        self.call_packed(&mut slot, self.limits.fuel_per_load, |store, ex| {
            ex.evaluate.call(store, (0, 0, 0, 0, 0))
        })
        .map_err(|e| LoadError::Unusable(format!("readying an instance: {e}")))?;
        Ok(slot)
    }

    fn checkout(&self) -> Result<Slot, CallError> {
        match self.pool.pop() {
            Some(slot) => Ok(slot),
            None => self
                .new_slot()
                .map_err(|e| CallError::Instantiate(e.to_string())),
        }
    }

    fn checkin(&self, slot: Slot) {
        if self.limits.max_idle_instances > 0 {
            // A full queue hands the instance back: it is dropped.
            let _ = self.pool.push(slot);
        }
    }

    /// Writes `parts` back to back into the instance's reusable input buffer (growing it when
    /// too small) and returns where each part starts.
    fn write_input(&self, slot: &mut Slot, parts: [&[u8]; 2]) -> Result<[u32; 2], CallError> {
        let total = parts[0].len() + parts[1].len();
        let total32 = u32::try_from(total).map_err(|_| CallError::OutOfMemory)?;
        let base = match slot.input {
            Some((ptr, cap)) if cap >= total32 => ptr,
            old => {
                if let Some((ptr, cap)) = old {
                    slot.input = None;
                    slot.exports
                        .free
                        .call(&mut slot.store, (ptr, cap))
                        .map_err(|e| classify(e, self.limits.fuel_per_call))?;
                }
                let cap = total32
                    .max(1024)
                    .checked_next_power_of_two()
                    .unwrap_or(total32);
                let ptr = slot
                    .exports
                    .alloc
                    .call(&mut slot.store, cap)
                    .map_err(|e| classify(e, self.limits.fuel_per_call))?;
                if ptr == 0 {
                    return Err(CallError::OutOfMemory);
                }
                slot.input = Some((ptr, cap));
                ptr
            }
        };
        let mem = slot.exports.memory.data_mut(&mut slot.store);
        let start = base as usize;
        let dst = mem
            .get_mut(start..start + total)
            .ok_or_else(|| CallError::BadResult("allocation outside memory".into()))?;
        let (a, b) = dst.split_at_mut(parts[0].len());
        a.copy_from_slice(parts[0]);
        b.copy_from_slice(parts[1]);
        Ok([base, base + parts[0].len() as u32])
    }

    /// Runs an export returning a packed buffer, copies the buffer out and frees it; `fuel`
    /// is the budget the store was given (named in an out-of-fuel error).
    fn call_packed(
        &self,
        slot: &mut Slot,
        fuel: u64,
        f: impl FnOnce(&mut Store<StoreData>, &Exports) -> wasmtime::Result<u64>,
    ) -> Result<Vec<u8>, CallError> {
        let packed = f(&mut slot.store, &slot.exports).map_err(|e| classify(e, fuel))?;
        let (ptr, len) = abi::unpack(packed);
        let data = slot.exports.memory.data(&slot.store);
        let out = data
            .get(ptr as usize..ptr as usize + len as usize)
            .ok_or_else(|| CallError::BadResult(format!("buffer {ptr}+{len} lies outside memory")))?
            .to_vec();
        slot.exports
            .free
            .call(&mut slot.store, (ptr, len))
            .map_err(|e| classify(e, fuel))?;
        Ok(out)
    }

    /// Runs one evaluation call on a pooled instance; discards the instance on any failure.
    fn with_slot(
        &self,
        inputs: [&[u8]; 2],
        f: impl FnOnce(&mut Store<StoreData>, &Exports, [(u32, u32); 2]) -> wasmtime::Result<u64>,
    ) -> Result<Vec<u8>, CallError> {
        let mut slot = self.checkout()?;
        let result = (|| {
            slot.store
                .set_fuel(self.limits.fuel_per_call)
                .map_err(|e| CallError::Trap(e.to_string()))?;
            let [p0, p1] = self.write_input(&mut slot, inputs)?;
            let bufs = [(p0, inputs[0].len() as u32), (p1, inputs[1].len() as u32)];
            self.call_packed(&mut slot, self.limits.fuel_per_call, |store, ex| {
                f(store, ex, bufs)
            })
        })();
        match &result {
            Ok(_) => {
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                self.checkin(slot);
            }
            Err(_) => {
                // Drop the instance: whatever state the trap left is never seen again.
                self.stats
                    .discarded_instances
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Raw ABI call: MessagePack in, the module's MessagePack `Resolution` bytes out.
    pub fn evaluate_raw(&self, key: &[u8], ctx: &[u8], options: u32) -> Result<Vec<u8>, CallError> {
        self.check_context_size(ctx.len())?;
        self.with_slot([key, ctx], |store, ex, [(kp, kl), (cp, cl)]| {
            ex.evaluate.call(store, (kp, kl, cp, cl, options))
        })
    }

    /// Raw ABI call for every flag: the module's MessagePack list of `Resolution`.
    pub fn evaluate_all_raw(&self, ctx: &[u8], options: u32) -> Result<Vec<u8>, CallError> {
        self.check_context_size(ctx.len())?;
        self.with_slot([ctx, &[]], |store, ex, [(cp, cl), _]| {
            ex.evaluate_all.call(store, (cp, cl, options))
        })
    }

    fn check_context_size(&self, size: usize) -> Result<(), CallError> {
        if size > self.limits.max_context_bytes {
            return Err(CallError::ContextTooLarge {
                size,
                limit: self.limits.max_context_bytes,
            });
        }
        Ok(())
    }

    /// The canonical bytes of the attributes in `names` (what the module is sent).
    fn encode_context(&self, ctx: &Context, names: &[String]) -> Result<Vec<u8>, CallError> {
        let bytes =
            encode_context_subset(ctx, names).map_err(|e| CallError::Encode(e.to_string()))?;
        self.check_context_size(bytes.len())?;
        Ok(bytes)
    }

    /// The answer served when the module gave none: the flag's `on_error` variant.
    fn fallback(&self, key: &str, err: &CallError) -> Resolution {
        self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.manifest.fallback(key, err.code(), err.to_string())
    }

    /// Asks the module, with the empty context every call for them sends, for the answer of
    /// each flag whose answer reads no attribute. Failures and `ERROR` answers are not kept
    /// (those flags keep going through the module).
    fn constant_answers(&self) -> std::collections::HashMap<String, Resolution> {
        let empty_context = [0x80u8]; // MessagePack {}
        self.manifest
            .flags
            .iter()
            .filter(|f| self.reads.get(&f.key).is_some_and(Vec::is_empty))
            .filter_map(|f| {
                let bytes = self
                    .evaluate_raw(f.key.as_bytes(), &empty_context, 0)
                    .ok()?;
                let r = decode::<Resolution>(&bytes).ok()?;
                (r.reason != flagforge_protocol::Reason::Error).then(|| (f.key.clone(), r))
            })
            .collect()
    }

    /// Evaluates one flag. Never fails: problems become a result with reason `ERROR`.
    ///
    /// Only the attributes the flag's answer can depend on are encoded and sent (the
    /// manifest's `reads`, with prerequisites'): the rest of a large context costs nothing.
    pub fn evaluate(&self, key: &str, ctx: &Context, explain: bool) -> Resolution {
        let names = self.reads.get(key).map_or(&[][..], Vec::as_slice);
        // Only a flag reading nothing can have a remembered answer: no second lookup for
        // the others.
        if !explain && names.is_empty() {
            if let Some(r) = self.constant.get(key) {
                self.stats.constant_answers.fetch_add(1, Ordering::Relaxed);
                return r.clone();
            }
        }
        let options = if explain { abi::OPT_EXPLAIN } else { 0 };
        let out = self
            .encode_context(ctx, names)
            .and_then(|c| self.evaluate_raw(key.as_bytes(), &c, options))
            .and_then(|bytes| {
                decode::<Resolution>(&bytes).map_err(|e| CallError::BadResult(e.to_string()))
            });
        out.unwrap_or_else(|e| self.fallback(key, &e))
    }

    /// Evaluates every flag, in declaration order.
    pub fn evaluate_all(&self, ctx: &Context, explain: bool) -> Vec<Resolution> {
        let options = if explain { abi::OPT_EXPLAIN } else { 0 };
        let out = self
            .encode_context(ctx, &self.reads_all)
            .and_then(|c| self.evaluate_all_raw(&c, options))
            .and_then(|bytes| {
                decode::<Vec<Resolution>>(&bytes).map_err(|e| CallError::BadResult(e.to_string()))
            });
        match out {
            Ok(results) => results,
            // One call for every flag failed (an oversized or unencodable attribute, a limit
            // hit): answer each flag from the attributes it reads, so only the flags that read
            // the offending input fail, as they would one by one.
            Err(_) => self
                .manifest
                .flags
                .iter()
                .map(|f| self.evaluate(&f.key, ctx, explain))
                .collect(),
        }
    }

    /// The context attributes `key`'s answer can depend on (its own reads and its
    /// prerequisites'): what a host sends the module for it.
    #[must_use]
    pub fn answer_reads(&self, key: &str) -> &[String] {
        self.reads.get(key).map_or(&[][..], Vec::as_slice)
    }

    /// What the module reports about itself.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// sha256 of the module bytes: the module's identity.
    #[must_use]
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
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
