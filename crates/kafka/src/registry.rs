//! The modules a host serves, one per ruleset, and the checks every candidate passes before it
//! is served: decode, signature, ordering, compilation, manifest. Evaluations in flight keep
//! the `Arc` of the module they started with; a swap only changes what the next one gets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use flagforge_distribution::{
    decide, Decision, Envelope, Position, SnapshotDir, SnapshotError, TrustedKeys,
};
use flagforge_governance::policy::{self, Replaced};
use flagforge_governance::Trust;
use wasm_host::{Host, LoadedModule};

/// Distinct rejections remembered as already logged; past it the memory starts over (a
/// repeat may then be logged once more).
const MAX_REMEMBERED: usize = 1024;
/// Rejection log lines per minute; past it they are counted and summarised once a minute, so a
/// flood of distinct garbage neither floods the log nor silences it for good.
const LOG_LINES_PER_MINUTE: u32 = 60;

/// How a rejected envelope is named in the log.
fn subject(env: &Envelope) -> String {
    format!(
        "{} v{} (sha256 {})",
        env.ruleset,
        env.version,
        env.sha256.get(..12).unwrap_or(&env.sha256)
    )
}

/// How an undecodable message is named in the log: its size and a fingerprint, so the same
/// message is recognised when it is read again.
fn message_subject(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("a message of {} bytes ({:016x})", bytes.len(), h.finish())
}

/// Where the served module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Loaded from the snapshot directory at start.
    Snapshot,
    /// Received from the broker.
    Kafka,
}

/// A module being served.
pub struct Served {
    /// Envelope version.
    pub version: u64,
    /// Envelope epoch (0 without one).
    pub epoch: u64,
    /// Module sha256.
    pub sha256: String,
    /// When it was published (RFC 3339, from the envelope).
    pub created_at: String,
    /// Where it came from.
    pub source: Source,
    /// When this host started serving it.
    pub since: Instant,
    /// The compiled module.
    pub module: LoadedModule,
    /// The module bytes (served to browsers and BFFs as they are).
    pub bytes: Arc<Vec<u8>>,
    /// sha256 of the module this one replaced on this host (`None`: the first one served).
    pub previous: Option<String>,
    /// Flags whose answers can differ from `previous` (every flag without one), from the
    /// semantic diff of the compiled rules ([`flagforge_governance::flags_changed`]).
    pub flags_changed: Vec<String>,
}

impl Served {
    /// Where the served envelope stands in its ruleset's history.
    #[must_use]
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            version: self.version,
        }
    }
}

/// The flags whose answers can differ between two modules of a ruleset, `before` (bytes;
/// `None`: nothing served) and `after` (bytes and loaded module): the semantic diff of their
/// compiled rules, or every flag of `after` when either module's rules cannot be read.
#[must_use]
pub fn changed_flags(before: Option<&[u8]>, after: &[u8], module: &LoadedModule) -> Vec<String> {
    let all = || {
        module
            .manifest()
            .flags
            .iter()
            .map(|f| f.key.clone())
            .collect()
    };
    let Ok(new) = flagforge_governance::module_rules(after) else {
        return all();
    };
    match before.map(flagforge_governance::module_rules) {
        None => flagforge_governance::flags_changed(None, &new),
        Some(Ok(old)) => flagforge_governance::flags_changed(Some(&old), &new),
        Some(Err(_)) => all(),
    }
}

/// What became of an offered envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Now served.
    Accepted {
        /// Ruleset.
        ruleset: String,
        /// Version.
        version: u64,
    },
    /// Already served (same version, same module).
    Duplicate,
    /// Refused; the reason's metric label.
    Rejected(String),
}

/// The served modules and the rejection counters.
pub struct Registry {
    host: Host,
    trusted: TrustedKeys,
    trust: Option<Trust>,
    snapshots: Option<SnapshotDir>,
    served: RwLock<HashMap<String, Arc<Served>>>,
    rejected: Mutex<BTreeMap<String, u64>>,
    logged: Mutex<RejectLog>,
    replaced_equal: Mutex<u64>,
    contact: Mutex<Option<(Instant, i64)>>,
    updates: tokio::sync::broadcast::Sender<Installed>,
}

/// Which rejections were logged recently.
struct RejectLog {
    seen: HashSet<String>,
    window: Instant,
    lines: u32,
    suppressed: u64,
}

impl RejectLog {
    fn new() -> RejectLog {
        RejectLog {
            seen: HashSet::new(),
            window: Instant::now(),
            lines: 0,
            suppressed: 0,
        }
    }

    /// Whether to log this (reason, subject) now.
    fn admit(&mut self, id: String) -> bool {
        if self.seen.contains(&id) {
            return false;
        }
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        self.seen.insert(id);
        if self.window.elapsed() >= std::time::Duration::from_secs(60) {
            if self.suppressed > 0 {
                log::warn!(
                    "{} further rejections in the last minute were only counted (see /metrics)",
                    self.suppressed
                );
            }
            *self = RejectLog {
                seen: std::mem::take(&mut self.seen),
                ..RejectLog::new()
            };
        }
        if self.lines < LOG_LINES_PER_MINUTE {
            self.lines += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// A module a registry started serving (announced to [`Registry::updates`] subscribers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Ruleset.
    pub ruleset: String,
    /// Envelope version.
    pub version: u64,
    /// Module sha256.
    pub sha256: String,
}

impl Registry {
    /// A registry compiling with `host`, trusting `trusted`, persisting to `snapshots`.
    #[must_use]
    pub fn new(host: Host, trusted: TrustedKeys, snapshots: Option<SnapshotDir>) -> Registry {
        Registry {
            host,
            trusted,
            trust: None,
            snapshots,
            served: RwLock::new(HashMap::new()),
            rejected: Mutex::new(BTreeMap::new()),
            logged: Mutex::new(RejectLog::new()),
            replaced_equal: Mutex::new(0),
            contact: Mutex::new(None),
            updates: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// Enforces a trust file: envelopes are verified against its authors (replacing the
    /// trusted keys) and must pass its policy ([`policy::check`]: change list, scopes,
    /// approvals, migration journeys) before they are compiled. Refusals are counted by the
    /// first refusal's kind (`missing_approval`, `out_of_scope`, …).
    #[must_use]
    pub fn governed(mut self, trust: Trust) -> Registry {
        self.trusted = trust.authors();
        self.trust = Some(trust);
        self
    }

    /// The wasmtime host modules are compiled with.
    #[must_use]
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Counts a rejection and logs it the first time this subject is rejected for this reason
    /// (a host re-reading the topic after a restart sees the same poison again), within a rate
    /// limit.
    fn reject(&self, reason: &str, subject: &str, why: &dyn std::fmt::Display) -> Offer {
        if let Ok(mut r) = self.rejected.lock() {
            *r.entry(reason.to_owned()).or_default() += 1;
        }
        if let Ok(mut logged) = self.logged.lock() {
            if logged.admit(format!("{reason}\0{subject}")) {
                log::warn!("rejected {subject}: {why} [{reason}]");
            }
        }
        Offer::Rejected(reason.to_owned())
    }

    /// Serves the verified snapshots; returns the files refused (also counted as
    /// `snapshot_rejected`).
    pub fn load_snapshots(&self) -> Result<Vec<(PathBuf, String)>, SnapshotError> {
        let Some(dir) = &self.snapshots else {
            return Ok(Vec::new());
        };
        let load = dir.load(&self.trusted)?;
        for env in load.envelopes {
            self.install(env, Source::Snapshot);
        }
        for (path, why) in &load.rejected {
            self.reject(
                "snapshot_rejected",
                &format!("snapshot {}", path.display()),
                why,
            );
        }
        Ok(load.rejected)
    }

    /// Offers one record of the modules topic (its key and value).
    pub fn offer(&self, key: Option<&[u8]>, bytes: &[u8]) -> Offer {
        self.offer_batch(&[(key, bytes)])
            .pop()
            .unwrap_or(Offer::Duplicate)
    }

    /// Offers several messages received together. Every message is decoded and verified
    /// (rejections are counted), but per ruleset only the newest valid envelope is compiled:
    /// candidates are tried newest first, and an older one only if a newer one fails to load.
    /// Returns one outcome per ruleset offered, plus one per rejected message.
    pub fn offer_batch(&self, messages: &[(Option<&[u8]>, &[u8])]) -> Vec<Offer> {
        let mut outcomes = Vec::new();
        let mut by_ruleset: BTreeMap<String, Vec<Envelope>> = BTreeMap::new();
        for (key, bytes) in messages {
            // The one check every reader of the topic applies (the publisher too).
            match Envelope::from_record(*key, bytes, &self.trusted) {
                Ok(env) => by_ruleset.entry(env.ruleset.clone()).or_default().push(env),
                Err(e) => {
                    let named = Envelope::decode(bytes)
                        .ok()
                        .filter(|_| bytes.len() <= flagforge_distribution::MAX_RECORD_BYTES);
                    let who = named.map_or_else(|| message_subject(bytes), |env| subject(&env));
                    outcomes.push(self.reject(e.kind(), &who, &e));
                }
            }
        }
        for (_, candidates) in by_ruleset {
            // Newest first by the hosts' rule: higher version, then later in the log.
            let mut candidates: Vec<(usize, Envelope)> =
                candidates.into_iter().enumerate().collect();
            candidates.sort_by_key(|(i, e)| std::cmp::Reverse((e.position(), *i)));
            let mut last = Offer::Duplicate;
            for (_, env) in candidates {
                last = self.install(env, Source::Kafka);
                if !matches!(&last, Offer::Rejected(r) if r.starts_with("invalid_module") || r == "ruleset_mismatch")
                {
                    break;
                }
            }
            outcomes.push(last);
        }
        outcomes
    }

    fn install(&self, env: Envelope, source: Source) -> Offer {
        if let Some(reason) = self.refusal(&env) {
            return reason;
        }
        if let Some(trust) = &self.trust {
            // Checked against what this host serves now: the diff is recomputed when that is
            // the module the envelope replaces (see `policy` for what a fresh host checks).
            let current = self
                .served
                .read()
                .ok()
                .and_then(|m| m.get(&env.ruleset).cloned());
            let replaced = current.as_ref().map(|s| Replaced {
                sha256: &s.sha256,
                module: &s.bytes,
            });
            if let Err(refusals) = policy::check(trust, &env, replaced) {
                let kind = refusals.first().map_or("policy", |r| r.kind);
                let why: Vec<String> = refusals.iter().map(ToString::to_string).collect();
                return self.reject(kind, &subject(&env), &why.join("; "));
            }
        }
        // Compile off the request path: evaluations keep using the current module meanwhile.
        let module = match self.host.compile(&env.module) {
            Ok(m) => m,
            Err(e) => {
                return self.reject(&format!("invalid_module_{}", e.kind()), &subject(&env), &e)
            }
        };
        if module.manifest().ruleset != env.ruleset {
            let why = format!("the module holds ruleset `{}`", module.manifest().ruleset);
            return self.reject("ruleset_mismatch", &subject(&env), &why);
        }
        // The snapshot first, then the compiled-module cache: when space runs out, what a
        // restart without the broker needs is the snapshot.
        if source == Source::Kafka {
            if let Some(dir) = &self.snapshots {
                if let Err(e) = dir.store(&env) {
                    self.reject("snapshot_write_failed", &subject(&env), &e);
                }
            }
        }
        self.host.remember(&module);
        let before = self.get(&env.ruleset);
        let flags_changed = changed_flags(
            before.as_ref().map(|b| b.bytes.as_slice()),
            &env.module,
            &module,
        );
        let served = Arc::new(Served {
            version: env.version,
            epoch: env.epoch.unwrap_or(0),
            sha256: env.sha256.clone(),
            created_at: env.created_at.clone(),
            source,
            since: Instant::now(),
            module,
            bytes: Arc::new(env.module.clone()),
            previous: before.map(|b| b.sha256.clone()),
            flags_changed,
        });
        let Ok(mut map) = self.served.write() else {
            return self.reject("internal", &subject(&env), &"the registry lock is poisoned");
        };
        // Decide again under the lock: nothing older may replace what another offer installed.
        let current = map
            .get(&env.ruleset)
            .map(|s| (s.position(), s.sha256.clone()));
        match decide(current.as_ref().map(|(p, s)| (*p, s.as_str())), &env) {
            Decision::Accept => {
                if let Some((p, sha)) = current.filter(|(p, _)| *p == env.position()) {
                    // A racing publisher's record, later in the log: it wins on every host.
                    if let Ok(mut n) = self.replaced_equal.lock() {
                        *n += 1;
                    }
                    log::warn!(
                        "{}: version {p} (sha256 {}) replaced by another module of the same version (sha256 {}), later in the log: two publishers raced",
                        env.ruleset,
                        sha.get(..12).unwrap_or(&sha),
                        env.sha256.get(..12).unwrap_or(&env.sha256)
                    );
                }
                map.insert(env.ruleset.clone(), served);
                let keep: Vec<[u8; 32]> = map.values().map(|s| s.module.cache_key()).collect();
                drop(map);
                if let Some(cache) = self.host.compiled_cache() {
                    cache.prune(&keep);
                }
                // Nobody listening is fine.
                let _ = self.updates.send(Installed {
                    ruleset: env.ruleset.clone(),
                    version: env.version,
                    sha256: env.sha256.clone(),
                });
                Offer::Accepted {
                    ruleset: env.ruleset,
                    version: env.version,
                }
            }
            Decision::Duplicate => Offer::Duplicate,
            Decision::Reject(r) => {
                drop(map);
                self.reject(r.kind(), &subject(&env), &r)
            }
        }
    }

    /// Checks ordering before compiling, so stale and duplicate envelopes cost nothing.
    fn refusal(&self, env: &Envelope) -> Option<Offer> {
        let current = self.get(&env.ruleset)?;
        match decide(Some((current.position(), &current.sha256)), env) {
            Decision::Accept => None,
            Decision::Duplicate => Some(Offer::Duplicate),
            Decision::Reject(r) => Some(self.reject(r.kind(), &subject(env), &r)),
        }
    }

    /// Announcements of every module this registry starts serving (a slow receiver may miss
    /// some and is told it lagged; it should then look at [`Registry::get`]).
    #[must_use]
    pub fn updates(&self) -> tokio::sync::broadcast::Receiver<Installed> {
        self.updates.subscribe()
    }

    /// The module served for a ruleset.
    #[must_use]
    pub fn get(&self, ruleset: &str) -> Option<Arc<Served>> {
        self.served.read().ok()?.get(ruleset).cloned()
    }

    /// Every served ruleset, sorted by name.
    #[must_use]
    pub fn all(&self) -> Vec<(String, Arc<Served>)> {
        let mut v: Vec<_> = self
            .served
            .read()
            .map(|m| m.iter().map(|(k, s)| (k.clone(), Arc::clone(s))).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Records a confirmed round trip to the broker and the consumer lag it showed (messages
    /// on the topic not yet read).
    pub fn confirm_contact(&self, lag: i64) {
        if let Ok(mut c) = self.contact.lock() {
            *c = Some((Instant::now(), lag));
        }
    }

    /// When the broker was last confirmed reachable, and the lag then.
    #[must_use]
    pub fn last_contact(&self) -> Option<(Instant, i64)> {
        self.contact.lock().ok().and_then(|c| *c)
    }

    /// Whether a served ruleset is older than its strictest flag allows: no broker contact
    /// confirmed within that flag's propagation bound (or never).
    #[must_use]
    pub fn is_stale(&self, served: &Served) -> bool {
        let Some(class) = served.module.manifest().strictest_propagation() else {
            return false;
        };
        let bound = std::time::Duration::from_millis(class.max_staleness_ms());
        self.last_contact()
            .is_none_or(|(at, _)| at.elapsed() > bound)
    }

    /// Served modules replaced by another module of the same version (racing publishers).
    #[must_use]
    pub fn replaced_equal_version(&self) -> u64 {
        self.replaced_equal.lock().map_or(0, |n| *n)
    }

    /// Rejections so far, by reason.
    #[must_use]
    pub fn rejected(&self) -> BTreeMap<String, u64> {
        self.rejected.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_host::Limits;

    #[test]
    fn the_same_poison_is_counted_every_time_but_logged_once() {
        let key = flagforge_distribution::KeyPair::generate().unwrap();
        let registry = Registry::new(
            Host::new(Limits::default()).unwrap(),
            TrustedKeys::new([key.public()]),
            None,
        );
        for _ in 0..3 {
            registry.offer(Some(b"checkout"), b"not an envelope");
        }
        registry.offer(Some(b"checkout"), b"another bad message");
        assert_eq!(registry.rejected().get("garbage"), Some(&4));
        assert_eq!(registry.logged.lock().unwrap().seen.len(), 2);
    }

    #[test]
    fn a_flood_of_distinct_garbage_is_rate_limited_and_never_silences_the_log_for_good() {
        let mut log = RejectLog::new();
        let admitted = (0..5000)
            .filter(|i| log.admit(format!("garbage\0{i}")))
            .count();
        assert_eq!(admitted, LOG_LINES_PER_MINUTE as usize);
        assert!(log.seen.len() <= MAX_REMEMBERED);
        // A minute later, new rejections are logged again.
        log.window -= std::time::Duration::from_secs(61);
        assert!(log.admit("bad_signature\0checkout v9".into()));
    }
}
