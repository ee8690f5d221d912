//! Evaluate flagforge modules inside your service: the same module bytes every other host runs,
//! loaded from a verified snapshot directory and (with the `kafka` feature) kept current from
//! the modules topic, with typed getters, change events and an OpenFeature provider
//! (`openfeature` feature).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let seeded = flagforge_testkit::seeded_snapshot("checkout", flagforge_testkit::checkout_module(false));
//! # let (snapshots, key_file) = (&seeded.snapshots, &seeded.key_file);
//! use flagforge_embed::{context, Flags};
//!
//! let flags = Flags::builder()
//!     .snapshot_dir(snapshots)               // verified envelopes, e.g. written by `flagforge host`
//!     .trusted_key_file(key_file)            // or .trust_file("trust.yaml")
//!     .ruleset("checkout")
//!     .start()?;
//! let ctx = context!({ "targetingKey": "c-1001", "market": "FR" });
//! assert_eq!(flags.string("CheckoutExperienceVariant", &ctx, "classic"), "one-page");
//! assert_eq!(flags.number("FreeShippingThreshold", &ctx, 50.0), 25.0);
//! let details = flags.details("FulfillmentRoutingMode", &ctx)?;
//! assert_eq!((details.variant(), details.version), (Some("DUAL_WRITE"), 1));
//! # Ok(()) }
//! ```
//!
//! **Identity.** OpenFeature's `targetingKey` goes into the context as is; the module binds
//! it to the ruleset's targeting key attribute (`targeting_key:` in the rules) unless the
//! context sets that attribute itself (docs/rule-language.md, "The targeting key").
//!
//! **Updates.** With the `kafka` feature, [`Builder::kafka`] follows the modules topic: every
//! record is verified (signature, trusted key, ordering, manifest) before it is served, and the
//! last good version keeps serving when a record is refused or the broker goes away. Without
//! it, [`Flags::reload`] re-reads the snapshot directory (for a sidecar that writes it).
//! [`Flags::events`] announces readiness, each new version with the flags whose answers can
//! have changed (from the semantic diff of the compiled rules), staleness and load errors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagforge_distribution::{SnapshotDir, TrustedKeys};
use flagforge_kafka::{Registry, Served};
pub use flagforge_protocol::{Context, ErrorCode, Reason, Resolution, Value, ValueType};
use tokio::sync::broadcast;
pub use wasm_host::Limits;

#[cfg(feature = "openfeature")]
mod provider;
#[cfg(feature = "openfeature")]
pub use provider::FlagforgeProvider;

/// A context from JSON: `context!({ "targetingKey": "c-1001", "market": "FR" })`. Values
/// that are not valid context values (numbers out of range, nesting too deep) are dropped
/// with the whole context: prefer [`Flags::context_from_json`] to see why.
#[macro_export]
macro_rules! context {
    ($($json:tt)+) => {
        $crate::Flags::context_from_json(&::serde_json::json!($($json)+)).unwrap_or_default()
    };
}

/// Why the embedded host could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A configuration problem (unreadable key, trust file, snapshot directory, broker setup).
    #[error("{0}")]
    Setup(String),
    /// No required ruleset is served yet.
    #[error("no ruleset is loaded yet")]
    NotReady,
    /// No served ruleset defines the flag.
    #[error("flag `{0}` is not defined by any served ruleset")]
    FlagNotFound(String),
    /// The context is not a valid context (e.g. a JSON number out of range).
    #[error("invalid context: {0}")]
    InvalidContext(String),
}

/// A state change of the embedded host, in OpenFeature's provider-event vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Every required ruleset is served (sent once, and again after `Stale` or `Error`).
    Ready,
    /// A new version is served.
    ConfigurationChanged {
        /// The ruleset.
        ruleset: String,
        /// Its new version.
        version: u64,
        /// The new module's sha256.
        sha256: String,
        /// Flags whose answers can have changed: rules, variants, defaults, failure policy,
        /// schedule, enablement, membership, added or retired — and flags depending on them
        /// as prerequisites. Owner, expiry and other descriptive changes do not count.
        flags_changed: Vec<String>,
    },
    /// A served ruleset went longer without broker contact than its strictest flag's
    /// propagation class allows (Kafka only).
    Stale,
    /// Something the host was offered could not be loaded (refused record or snapshot); the
    /// last good version, if any, keeps serving.
    Error(String),
}

/// The answer for one flag, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    /// The module's answer (value, variant, reason, error code).
    pub resolution: Resolution,
    /// The ruleset that answered.
    pub ruleset: String,
    /// Its version.
    pub version: u64,
    /// Its module's sha256.
    pub sha256: String,
    /// The flag's value type.
    pub value_type: ValueType,
}

impl Details {
    /// The served variant.
    #[must_use]
    pub fn variant(&self) -> Option<&str> {
        self.resolution.variant.as_deref()
    }

    /// The error code when the evaluation failed (the value is then the flag's `on_error`).
    #[must_use]
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.resolution.error_code
    }

    /// The answer as OpenFeature clients see it in JSON (the same as `flagforge eval`).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        self.resolution.to_json(self.value_type == ValueType::Float)
    }
}

/// How to start a [`Flags`].
#[derive(Debug, Default)]
pub struct Builder {
    snapshot_dir: Option<PathBuf>,
    key_files: Vec<PathBuf>,
    keys: Vec<flagforge_distribution::PublicKey>,
    trust_file: Option<PathBuf>,
    rulesets: Vec<String>,
    limits: Option<Limits>,
    keep_now: bool,
    #[cfg(feature = "kafka")]
    kafka: Option<flagforge_kafka::KafkaConfig>,
}

impl Builder {
    /// The snapshot directory: verified envelopes served at start (and written on each new
    /// version with Kafka). Required.
    #[must_use]
    pub fn snapshot_dir(mut self, dir: impl AsRef<Path>) -> Builder {
        self.snapshot_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// A public key file (`flagforge keygen`) whose signatures are accepted (repeatable).
    #[must_use]
    pub fn trusted_key_file(mut self, path: impl AsRef<Path>) -> Builder {
        self.key_files.push(path.as_ref().to_path_buf());
        self
    }

    /// A trusted public key (repeatable).
    #[must_use]
    pub fn trusted_key(mut self, key: flagforge_distribution::PublicKey) -> Builder {
        self.keys.push(key);
        self
    }

    /// A trust file (`docs/governance.md`): its authors are the trusted keys and every
    /// version must pass its policy (approvals, owner scopes, migration journeys).
    #[must_use]
    pub fn trust_file(mut self, path: impl AsRef<Path>) -> Builder {
        self.trust_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// A ruleset that must be served before the host is ready; flags are looked up in
    /// these rulesets first, in this order (repeatable; none: any one served ruleset).
    #[must_use]
    pub fn ruleset(mut self, name: impl Into<String>) -> Builder {
        self.rulesets.push(name.into());
        self
    }

    /// Fuel, memory and size limits of every evaluation (default: `Limits::default()`).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = Some(limits);
        self
    }

    /// Do not supply `now` (the current time) to rulesets that declare it when a context
    /// has none: such contexts then read `now` as missing (for replaying recorded contexts).
    #[must_use]
    pub fn without_clock(mut self) -> Builder {
        self.keep_now = true;
        self
    }

    /// Follow the modules topic on these brokers (`host:port[,host:port]`).
    #[cfg(feature = "kafka")]
    #[must_use]
    pub fn kafka(mut self, brokers: impl Into<String>) -> Builder {
        self.kafka = Some(flagforge_kafka::KafkaConfig::new(brokers));
        self
    }

    /// Follow the modules topic with librdkafka settings of your own (`-X` in the CLI).
    #[cfg(feature = "kafka")]
    #[must_use]
    pub fn kafka_config(mut self, config: flagforge_kafka::KafkaConfig) -> Builder {
        self.kafka = Some(config);
        self
    }

    /// Loads the snapshots and starts following updates. Fails on configuration errors
    /// only: a missing or refused snapshot means "not ready yet" (see [`Flags::status`]).
    pub fn start(self) -> Result<Flags, EmbedError> {
        let setup = |e: &dyn std::fmt::Display| EmbedError::Setup(e.to_string());
        let follows_broker = self.has_kafka();
        let dir = self
            .snapshot_dir
            .ok_or_else(|| EmbedError::Setup("a snapshot directory is required".into()))?;
        let mut keys = self.keys;
        for path in &self.key_files {
            keys.push(
                flagforge_distribution::PublicKey::read(path)
                    .map_err(|e| setup(&format!("{}: {e}", path.display())))?,
            );
        }
        let trust = match &self.trust_file {
            Some(path) => Some(
                flagforge_governance::Trust::read(path)
                    .map_err(|e| setup(&format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        if keys.is_empty() && trust.is_none() {
            return Err(EmbedError::Setup(
                "no trusted key: pass trusted_key_file, trusted_key or trust_file".into(),
            ));
        }
        let host = wasm_host::Host::new(self.limits.unwrap_or_default()).map_err(|e| setup(&e))?;
        let host = match host.clone().with_compiled_cache(&dir.join("compiled")) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("compiled-module cache unusable ({e}); compiling every load");
                host
            }
        };
        let snapshots = SnapshotDir::open(&dir).map_err(|e| setup(&e))?;
        let mut registry = Registry::new(host, TrustedKeys::new(keys), Some(snapshots));
        if let Some(trust) = trust {
            registry = registry.governed(trust);
        }
        let registry = Arc::new(registry);
        let (events, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            registry: Arc::clone(&registry),
            rulesets: self.rulesets,
            events,
            follows_broker,
            clock: !self.keep_now,
            state: Mutex::new(Watch::default()),
        });
        let refused = registry.load_snapshots().map_err(|e| setup(&e))?;
        inner.note_refused(&refused);
        let stop = tokio::sync::watch::channel(false);
        let worker = {
            let inner = Arc::clone(&inner);
            #[cfg(feature = "kafka")]
            let kafka = self.kafka;
            let mut stop_rx = stop.1;
            let (started_tx, started_rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("flagforge-embed".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = started_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    rt.block_on(async move {
                        #[cfg(feature = "kafka")]
                        let _subscriber = match kafka {
                            Some(k) => match flagforge_kafka::Subscriber::start(
                                &k,
                                Arc::clone(&inner.registry),
                            ) {
                                Ok(s) => Some(s),
                                Err(e) => {
                                    let _ = started_tx.send(Err(e.to_string()));
                                    return;
                                }
                            },
                            None => None,
                        };
                        let _ = started_tx.send(Ok(()));
                        inner.watch(&mut stop_rx).await;
                    });
                })
                .map_err(|e| setup(&e))?;
            match started_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EmbedError::Setup(e)),
                Err(_) => return Err(EmbedError::Setup("the update thread stopped".into())),
            }
            thread
        };
        Ok(Flags {
            inner,
            _worker: Arc::new(Worker {
                stop: stop.0,
                thread: Some(worker),
            }),
        })
    }

    fn has_kafka(&self) -> bool {
        #[cfg(feature = "kafka")]
        {
            self.kafka.is_some()
        }
        #[cfg(not(feature = "kafka"))]
        {
            false
        }
    }
}

/// The embedded host: cheap to clone, shareable across threads.
#[derive(Clone)]
pub struct Flags {
    inner: Arc<Inner>,
    _worker: Arc<Worker>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags")
            .field("rulesets", &self.inner.rulesets)
            .field("status", &self.status())
            .finish()
    }
}

/// Stops the update thread (and the Kafka subscription) when the last clone is dropped.
struct Worker {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the embedded host can answer, in OpenFeature's provider states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No required ruleset is served yet.
    NotReady,
    /// Serving every required ruleset.
    Ready,
    /// Serving, but without broker contact for longer than a ruleset's strictest flag allows.
    Stale,
    /// Nothing is served and what was offered was refused.
    Error,
}

struct Inner {
    registry: Arc<Registry>,
    rulesets: Vec<String>,
    events: broadcast::Sender<Event>,
    follows_broker: bool,
    clock: bool,
    state: Mutex<Watch>,
}

#[derive(Default)]
struct Watch {
    /// The module each ruleset served when last announced.
    announced: std::collections::BTreeMap<String, Arc<Served>>,
    last: Option<Status>,
    refusals: u64,
    last_error: Option<String>,
}

impl Inner {
    fn served(&self) -> Vec<(String, Arc<Served>)> {
        let mut all = self.registry.all();
        all.sort_by_key(|(name, _)| {
            self.rulesets
                .iter()
                .position(|r| r == name)
                .unwrap_or(usize::MAX)
        });
        all
    }

    fn status(&self) -> Status {
        let all = self.registry.all();
        let ready = if self.rulesets.is_empty() {
            !all.is_empty()
        } else {
            self.rulesets
                .iter()
                .all(|r| all.iter().any(|(name, _)| name == r))
        };
        if !ready {
            let refused = self.state.lock().map(|s| s.refusals > 0).unwrap_or(false);
            return if refused && all.is_empty() {
                Status::Error
            } else {
                Status::NotReady
            };
        }
        if self.follows_broker && all.iter().any(|(_, s)| self.registry.is_stale(s)) {
            return Status::Stale;
        }
        Status::Ready
    }

    fn note_refused(&self, refused: &[(PathBuf, String)]) {
        if let (Some((path, why)), Ok(mut s)) = (refused.last(), self.state.lock()) {
            s.refusals += refused.len() as u64;
            s.last_error = Some(format!("snapshot {} refused: {why}", path.display()));
        }
    }

    /// Announces new versions, refusals and status changes until stopped.
    async fn watch(&self, stop: &mut tokio::sync::watch::Receiver<bool>) {
        let mut updates = self.registry.updates();
        // What was served before the first announcement (snapshots) is the baseline.
        if let Ok(mut s) = self.state.lock() {
            s.announced = self.registry.all().into_iter().collect();
        }
        loop {
            self.tick();
            tokio::select! {
                _ = stop.changed() => return,
                update = updates.recv() => match update {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// One look at the registry: new versions, refusals, status.
    fn tick(&self) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for (ruleset, served) in self.registry.all() {
            let old = s.announced.get(&ruleset).cloned();
            if old
                .as_ref()
                .is_some_and(|o| o.sha256 == served.sha256 && o.version == served.version)
            {
                continue;
            }
            let flags_changed = flags_changed(old.as_deref(), &served);
            s.announced.insert(ruleset.clone(), Arc::clone(&served));
            let _ = self.events.send(Event::ConfigurationChanged {
                ruleset,
                version: served.version,
                sha256: served.sha256.clone(),
                flags_changed,
            });
        }
        let refusals: u64 = self.registry.rejected().values().sum();
        if refusals > s.refusals {
            s.refusals = refusals;
            let why = s
                .last_error
                .take()
                .unwrap_or_else(|| format!("{refusals} offered module(s) refused; see the log"));
            let _ = self.events.send(Event::Error(why));
        }
        drop(s);
        let now = self.status();
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.last != Some(now) {
            s.last = Some(now);
            let event = match now {
                Status::Ready => Some(Event::Ready),
                Status::Stale => Some(Event::Stale),
                Status::NotReady | Status::Error => None,
            };
            if let Some(e) = event {
                let _ = self.events.send(e);
            }
        }
    }
}

/// The flags whose answers can differ between what was announced and what is served: the
/// registry's diff when it replaced exactly the announced module, else the same diff here.
fn flags_changed(old: Option<&Served>, new: &Served) -> Vec<String> {
    if old.map(|o| &o.sha256) == new.previous.as_ref() {
        return new.flags_changed.clone();
    }
    flagforge_kafka::changed_flags(old.map(|o| o.bytes.as_slice()), &new.bytes, &new.module)
}

impl Flags {
    /// How to start one.
    #[must_use]
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A context from JSON (an object of attribute values; `targetingKey` included).
    pub fn context_from_json(json: &serde_json::Value) -> Result<Context, EmbedError> {
        flagforge_protocol::value::context_from_json(json)
            .map_err(|e| EmbedError::InvalidContext(e.to_string()))
    }

    /// Whether the host can answer.
    #[must_use]
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Waits until every required ruleset is served; `false` after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if matches!(self.status(), Status::Ready | Status::Stale) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Events from now on: readiness, new versions (with the flags that changed),
    /// staleness, refusals.
    #[must_use]
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Re-reads the snapshot directory and serves any newer verified envelope (for a
    /// snapshot directory written by another process).
    pub fn reload(&self) -> Result<(), EmbedError> {
        let refused = self
            .inner
            .registry
            .load_snapshots()
            .map_err(|e| EmbedError::Setup(e.to_string()))?;
        self.inner.note_refused(&refused);
        self.inner.tick();
        Ok(())
    }

    /// What is served: (ruleset, version, sha256), configured rulesets first.
    #[must_use]
    pub fn served(&self) -> Vec<(String, u64, String)> {
        self.inner
            .served()
            .into_iter()
            .map(|(n, s)| (n, s.version, s.sha256.clone()))
            .collect()
    }

    /// Evaluates one flag: the module's full answer with its ruleset, version and hash.
    /// `now` is supplied when the schema declares it and the context has none.
    pub fn details(&self, flag: &str, ctx: &Context) -> Result<Details, EmbedError> {
        let (ruleset, s, value_type) = self.lookup(flag)?;
        let manifest = s.module.manifest();
        // `now` only for flags whose answer reads it (no clone of the context otherwise).
        let mut with_now;
        let ctx = if self.inner.clock
            && !ctx.contains_key("now")
            && s.module.answer_reads(flag).any(|r| r == "now")
        {
            with_now = ctx.clone();
            manifest.fill_now(&mut with_now, now);
            &with_now
        } else {
            ctx
        };
        Ok(Details {
            resolution: s.module.evaluate(flag, ctx, false),
            ruleset,
            version: s.version,
            sha256: s.sha256.clone(),
            value_type,
        })
    }

    /// The ruleset serving `flag` (the configured ones first, in order, then any other), and
    /// the flag's value type.
    fn lookup(&self, flag: &str) -> Result<(String, Arc<Served>, ValueType), EmbedError> {
        let defines = |s: &Served| s.module.manifest().flag(flag).map(|f| f.value_type());
        let registry = &self.inner.registry;
        for name in &self.inner.rulesets {
            if let Some(s) = registry.get(name) {
                if let Some(t) = defines(&s) {
                    return Ok((name.clone(), s, t));
                }
            }
        }
        let served = self.inner.served();
        if served.is_empty() {
            return Err(EmbedError::NotReady);
        }
        served
            .into_iter()
            .find_map(|(name, s)| defines(&s).map(|t| (name, s, t)))
            .ok_or_else(|| EmbedError::FlagNotFound(flag.to_owned()))
    }

    fn value(&self, flag: &str, ctx: &Context) -> Option<Value> {
        self.details(flag, ctx)
            .ok()
            .filter(|d| d.resolution.error_code.is_none())
            .map(|d| d.resolution.value)
    }

    /// A boolean flag's value; `default` when it cannot be evaluated or is not a boolean.
    #[must_use]
    pub fn boolean(&self, flag: &str, ctx: &Context, default: bool) -> bool {
        match self.value(flag, ctx) {
            Some(Value::Bool(b)) => b,
            _ => default,
        }
    }

    /// A string flag's value; `default` when it cannot be evaluated or is not a string.
    #[must_use]
    pub fn string(&self, flag: &str, ctx: &Context, default: &str) -> String {
        match self.value(flag, ctx) {
            Some(Value::String(s)) => s,
            _ => default.to_owned(),
        }
    }

    /// A number flag's value (integer or float); `default` otherwise.
    #[must_use]
    pub fn number(&self, flag: &str, ctx: &Context, default: f64) -> f64 {
        match self.value(flag, ctx) {
            Some(Value::Int(i)) => i as f64,
            Some(Value::Float(f)) => f,
            _ => default,
        }
    }

    /// An integer flag's value; `default` otherwise (including float-typed flags).
    #[must_use]
    pub fn integer(&self, flag: &str, ctx: &Context, default: i64) -> i64 {
        let d = self.details(flag, ctx).ok();
        match d {
            Some(d) if d.resolution.error_code.is_none() && d.value_type == ValueType::Integer => {
                match d.resolution.value {
                    Value::Int(i) => i,
                    _ => default,
                }
            }
            _ => default,
        }
    }

    /// An object flag's value as JSON; `default` otherwise.
    #[must_use]
    pub fn object(
        &self,
        flag: &str,
        ctx: &Context,
        default: serde_json::Value,
    ) -> serde_json::Value {
        match self.value(flag, ctx) {
            Some(v @ (Value::Map(_) | Value::List(_))) => v.to_json(),
            _ => default,
        }
    }
}

fn now() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    flagforge_protocol::time::format_timestamp(nanos)
}
