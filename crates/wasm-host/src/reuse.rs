//! Compiled-function reuse between modules (Cranelift's incremental compilation cache).
//!
//! A new version of a ruleset compiles nothing: it shares its template (`shared.rs`). What is
//! still compiled is code the host has not seen — the template of another flagforge build, or a
//! module compiled whole — and most of its functions are usually identical to ones compiled
//! before. wasmtime still translates each function to Cranelift IR, and this store hands back
//! the machine code Cranelift produced for an identical function before, keyed by Cranelift's
//! own hash of the function and the compiler settings.
//!
//! The store lives in memory, per [`crate::Host`] (its engine), and is bounded: past
//! [`CODE_REUSE_BYTES`] the oldest entries go first. What it holds is this process's own
//! compiler output, never read from outside, so it needs no more trust than compiling does.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use wasmtime::CacheStore;

/// Most bytes of compiled functions kept (keys and code). The checkout evaluator needs about
/// 1 MiB; the bound leaves room for a few distinct guests per host.
pub const CODE_REUSE_BYTES: usize = 32 * 1024 * 1024;

/// Counters of function reuse, exported as metrics by hosts. Counted per function compiled.
#[derive(Debug, Default)]
pub struct ReuseStats {
    /// Functions whose machine code was reused.
    pub hits: AtomicU64,
    /// Functions compiled because no identical function was stored.
    pub misses: AtomicU64,
    /// Entries dropped to stay within [`CODE_REUSE_BYTES`].
    pub evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Vec<u8>>,
    order: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// The in-memory store wasmtime's compiler reads and fills.
#[derive(Debug)]
pub(crate) struct CodeReuse {
    entries: Mutex<Entries>,
    limit: usize,
    stats: ReuseStats,
}

impl CodeReuse {
    pub(crate) fn new(limit: usize) -> CodeReuse {
        CodeReuse {
            entries: Mutex::new(Entries::default()),
            limit,
            stats: ReuseStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> &ReuseStats {
        &self.stats
    }
}

impl CacheStore for CodeReuse {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        // A poisoned lock only means another compile panicked mid-insert; the map is still a
        // map of complete entries, so keep using it.
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = entries.map.get(key).map(|v| Cow::Owned(v.clone()));
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let size = key.len() + value.len();
        if size > self.limit {
            return false;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.map.contains_key(key) {
            return true;
        }
        while entries.bytes + size > self.limit {
            let Some(oldest) = entries.order.pop_front() else {
                break;
            };
            if let Some(code) = entries.map.remove(&oldest) {
                entries.bytes -= oldest.len() + code.len();
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        entries.bytes += size;
        entries.order.push_back(key.to_vec());
        entries.map.insert(key.to_vec(), value);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_past_the_bound() {
        let store = CodeReuse::new(10);
        assert!(store.insert(b"a", vec![0; 4]));
        assert!(store.insert(b"b", vec![0; 4]));
        assert!(store.insert(b"c", vec![0; 4]));
        assert!(store.get(b"a").is_none(), "oldest evicted");
        assert!(store.get(b"b").is_some());
        assert!(store.get(b"c").is_some());
        assert!(
            !store.insert(b"d", vec![0; 10]),
            "larger than the whole bound"
        );
        assert_eq!(store.stats().evicted.load(Ordering::Relaxed), 1);
        assert_eq!(store.stats().hits.load(Ordering::Relaxed), 2);
        assert_eq!(store.stats().misses.load(Ordering::Relaxed), 1);
    }
}
