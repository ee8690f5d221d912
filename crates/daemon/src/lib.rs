//! The flagforge host daemon (`flagforge host`): serves the modules a [`Registry`] holds over
//! HTTP — OpenFeature Remote Evaluation Protocol (OFREP) evaluation, module download with
//! ETags, Prometheus metrics, health and readiness — while a Kafka [`Subscriber`] keeps the
//! registry current. It starts from the snapshot directory before the broker answers, and
//! keeps serving when the broker goes away.
//!
//! OFREP mapping: a result with a value is `200` with `key`, `value`, `variant`, `reason` and
//! `metadata` (`ruleset`, `version`, `sha256`). That includes evaluation errors for which the
//! flag's failure policy served its `on_error` variant: `reason` is `ERROR` and the error code
//! and details are in `metadata`, so a kill switch still fails the way its owner chose. An
//! unknown flag is `404` `FLAG_NOT_FOUND`; a request body or context that cannot be used is
//! `400` `INVALID_CONTEXT`/`PARSE_ERROR`; nothing loaded yet is `503`.

mod metrics;
mod routes;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use flagforge_distribution::{SnapshotDir, TrustedKeys};
use flagforge_kafka::{KafkaConfig, Registry, Subscriber};
use wasm_host::{Host, Limits};

pub use metrics::Metrics;
pub use routes::router;
pub use serve::{ConnectionStats, HttpLimits};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Setting something up failed.
    #[error("{0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Setup(e.to_string())
}

/// What `flagforge host` is started with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Broker to subscribe to; `None` serves the snapshot directory only.
    pub kafka: Option<KafkaConfig>,
    /// Keys whose signatures are accepted.
    pub trusted: TrustedKeys,
    /// Where the last good envelope per ruleset is kept.
    pub snapshot_dir: PathBuf,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Rulesets this host must serve before it is ready (empty: any one).
    pub rulesets: Vec<String>,
    /// Origins allowed to call the host from a browser (CORS on every route: OFREP, modules,
    /// events), e.g. `https://shop.example`, a comma-separated list, or `*`; `None` sends no
    /// CORS headers.
    pub cors_origin: Option<String>,
    /// How OFREP answers an evaluation that failed (see [`OfrepErrors`]).
    pub ofrep_errors: OfrepErrors,
    /// Keys whose decision contexts (header `flagforge-decision`) are honoured.
    pub decision_keys: TrustedKeys,
    /// Keep compiled modules in `<snapshot_dir>/compiled` so a restart skips compilation
    /// (see `wasm_host::CompiledCache`).
    pub compiled_cache: bool,
    /// A trust file: envelopes must pass its policy (authors, owner scopes, approvals,
    /// migration journeys); its authors replace `trusted`.
    pub trust: Option<flagforge_governance::Trust>,
    /// Limits of the HTTP listener.
    pub http: HttpLimits,
}

/// How OFREP answers an evaluation that failed (wrong-typed context, trap, budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OfrepErrors {
    /// As the OFREP specification defines: status 400 (`PARSE_ERROR`, `TYPE_MISMATCH`,
    /// `INVALID_CONTEXT`, `TARGETING_KEY_MISSING`), 404 (`FLAG_NOT_FOUND`) or 500 (`GENERAL`)
    /// with a top-level `errorCode`, so OpenFeature SDKs run their error hooks and return the
    /// caller's default. In bulk responses the flag's entry carries the `errorCode`.
    #[default]
    Spec,
    /// Status 200 with the flag's `on_error` variant, `reason: ERROR`, and the error code in
    /// `metadata`: every client gets the owner's fallback instead of its own default.
    Fallback,
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// The served modules.
    pub registry: Arc<Registry>,
    /// Rulesets required for readiness, in lookup order.
    pub rulesets: Vec<String>,
    /// Metrics.
    pub metrics: Metrics,
    /// When the daemon started.
    pub started: Instant,
    /// How OFREP answers failed evaluations.
    pub ofrep_errors: OfrepErrors,
    /// Keys whose decision contexts are honoured (none: the header is ignored).
    pub decision_keys: TrustedKeys,
    /// Connection counters of the HTTP listener.
    pub connections: Arc<ConnectionStats>,
    /// The listener's idle timeout (event streams send keep-alives well inside it).
    pub idle_timeout: std::time::Duration,
}

/// A started daemon: the bound address and the tasks; dropping it stops everything.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Shared state (for tests and embedding).
    pub state: Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
    _subscriber: Option<Subscriber>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts the daemon on the current tokio runtime: load snapshots, subscribe, serve HTTP.
pub async fn start(config: DaemonConfig) -> Result<Running, DaemonError> {
    let snapshots = SnapshotDir::open(&config.snapshot_dir).map_err(setup)?;
    let mut host = Host::new(Limits::default()).map_err(setup)?;
    if config.compiled_cache {
        // The cache only saves compilation time: a path that cannot hold it (a regular file,
        // no permission) means no cache, never no host.
        let dir = config.snapshot_dir.join("compiled");
        match host.clone().with_compiled_cache(&dir) {
            Ok(h) => host = h,
            Err(e) => log::warn!(
                "compiled-module cache {} is unusable ({e}); serving without it",
                dir.display()
            ),
        }
    }
    let mut registry = Registry::new(host, config.trusted.clone(), Some(snapshots));
    if let Some(trust) = &config.trust {
        registry = registry.governed(trust.clone());
    }
    let registry = Arc::new(registry);
    // Refused snapshot files are counted and logged by the registry, never loaded.
    registry.load_snapshots().map_err(setup)?;
    let subscriber = match &config.kafka {
        Some(kafka) => Some(Subscriber::start(kafka, Arc::clone(&registry)).map_err(setup)?),
        None => None,
    };
    let state = Arc::new(AppState {
        registry,
        rulesets: config.rulesets.clone(),
        metrics: Metrics::new().map_err(setup)?,
        started: Instant::now(),
        decision_keys: config.decision_keys.clone(),
        connections: Arc::new(ConnectionStats::default()),
        idle_timeout: config.http.idle_timeout,
        ofrep_errors: config.ofrep_errors,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| setup(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(setup)?;
    let mut app = router(Arc::clone(&state));
    if let Some(origins) = &config.cors_origin {
        app = app.layer(routes::cors(origins).map_err(setup)?);
    }
    let app = serve::limit(app, &config.http);
    let server = tokio::spawn(serve::serve(
        listener,
        app,
        config.http,
        Arc::clone(&state.connections),
    ));
    Ok(Running {
        addr,
        state,
        server,
        _subscriber: subscriber,
    })
}
