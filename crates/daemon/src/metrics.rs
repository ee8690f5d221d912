//! Prometheus metrics of a host.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry as Prom, TextEncoder};

use crate::AppState;

/// The host's metrics.
pub struct Metrics {
    prom: Prom,
    evaluations: IntCounterVec,
    rejected: IntCounterVec,
    seen_rejections: Mutex<BTreeMap<String, u64>>,
    version: IntGaugeVec,
    module_age: IntGaugeVec,
    serving_for: IntGaugeVec,
    fallbacks: IntCounterVec,
    mismatches: IntCounterVec,
    decisions: IntCounterVec,
    compiled_cache: IntCounterVec,
    contact_age: prometheus::IntGauge,
    lag: prometheus::IntGauge,
    stale: IntGaugeVec,
    connections: IntCounterVec,
    open_connections: prometheus::IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let prom = Prom::new();
        let evaluations = IntCounterVec::new(
            Opts::new(
                "flagforge_evaluations_total",
                "Evaluations by flag, variant and reason",
            ),
            &["flag", "variant", "reason"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "flagforge_envelopes_rejected_total",
                "Envelopes and snapshots refused, by reason",
            ),
            &["reason"],
        )?;
        let version = IntGaugeVec::new(
            Opts::new(
                "flagforge_module_version",
                "Version of the module served per ruleset",
            ),
            &["ruleset", "source"],
        )?;
        let module_age = IntGaugeVec::new(
            Opts::new(
                "flagforge_module_age_seconds",
                "Seconds since the served module was published",
            ),
            &["ruleset"],
        )?;
        let serving_for = IntGaugeVec::new(
            Opts::new(
                "flagforge_module_serving_seconds",
                "Seconds since this host started serving the module",
            ),
            &["ruleset"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "flagforge_fallbacks_total",
                "Answers served by a flag's failure policy, by error code",
            ),
            &["flag", "error_code"],
        )?;
        let mismatches = IntCounterVec::new(
            Opts::new(
                "flagforge_decision_mismatches_total",
                "Carried decisions that differ from this host's module now (the carried answer was served), by flag",
            ),
            &["flag"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "flagforge_decision_contexts_total",
                "Evaluations that came with a decision context, by outcome (carried, local, or the refusal)",
            ),
            &["outcome"],
        )?;
        let compiled_cache = IntCounterVec::new(
            Opts::new(
                "flagforge_compiled_cache_total",
                "Module loads by where the native code came from: hit, miss (compiled), rejected (a stale, foreign or corrupt cache file; recompiled), write_failed",
            ),
            &["outcome"],
        )?;
        let contact_age = prometheus::IntGauge::new(
            "flagforge_broker_contact_age_milliseconds",
            "Milliseconds since the broker was last confirmed reachable (-1: never)",
        )?;
        let lag = prometheus::IntGauge::new(
            "flagforge_consumer_lag",
            "Messages on the modules topic not yet read, at the last contact",
        )?;
        let stale = IntGaugeVec::new(
            Opts::new(
                "flagforge_ruleset_stale",
                "1 when the last confirmed broker contact is older than the ruleset's strictest propagation class allows",
            ),
            &["ruleset", "propagation"],
        )?;
        let connections = IntCounterVec::new(
            Opts::new(
                "flagforge_http_connections_total",
                "HTTP connections: accepted, refused (over the connection cap), idle_closed (closed by the idle timeout)",
            ),
            &["outcome"],
        )?;
        let open_connections = prometheus::IntGauge::new(
            "flagforge_http_connections_open",
            "HTTP connections open now",
        )?;
        prom.register(Box::new(open_connections.clone()))?;
        prom.register(Box::new(contact_age.clone()))?;
        prom.register(Box::new(lag.clone()))?;
        prom.register(Box::new(stale.clone()))?;
        for c in [
            &evaluations,
            &rejected,
            &fallbacks,
            &mismatches,
            &decisions,
            &compiled_cache,
            &connections,
        ] {
            prom.register(Box::new(c.clone()))?;
        }
        for g in [&version, &module_age, &serving_for] {
            prom.register(Box::new(g.clone()))?;
        }
        Ok(Metrics {
            prom,
            evaluations,
            rejected,
            seen_rejections: Mutex::new(BTreeMap::new()),
            version,
            module_age,
            serving_for,
            fallbacks,
            mismatches,
            decisions,
            compiled_cache,
            contact_age,
            lag,
            stale,
            connections,
            open_connections,
        })
    }

    /// Counts a decision mismatch for `flag`.
    pub fn mismatch(&self, flag: &str) {
        self.mismatches.with_label_values(&[flag]).inc();
    }

    /// Counts an evaluation that came with a decision context.
    pub fn decision(&self, outcome: &str) {
        self.decisions.with_label_values(&[outcome]).inc();
    }

    /// Counts one answer.
    pub fn evaluated(&self, r: &flagforge_protocol::Resolution) {
        let variant = r.variant.as_deref().unwrap_or("");
        self.evaluations
            .with_label_values(&[r.key.as_str(), variant, r.reason.as_str()])
            .inc();
        if let Some(code) = r.error_code {
            let code = serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.fallbacks
                .with_label_values(&[r.key.as_str(), code.as_str()])
                .inc();
        }
    }

    /// Renders the text exposition, refreshing the per-ruleset gauges first.
    pub fn render(&self, state: &AppState) -> String {
        // The registry and the compiled cache keep running totals; the counters get the
        // increase since the last scrape (`seen` is keyed by counter and label).
        if let Ok(mut seen) = self.seen_rejections.lock() {
            let mut mirror = |counter: &IntCounterVec, name: &str, label: &str, total: u64| {
                let before = seen.insert(format!("{name}\0{label}"), total).unwrap_or(0);
                if total > before {
                    counter.with_label_values(&[label]).inc_by(total - before);
                }
            };
            for (reason, total) in state.registry.rejected() {
                mirror(&self.rejected, "rejected", &reason, total);
            }
            let c = &state.connections;
            for (outcome, n) in [
                ("accepted", &c.accepted),
                ("refused", &c.refused),
                ("idle_closed", &c.idle_closed),
            ] {
                let total = n.load(std::sync::atomic::Ordering::Relaxed);
                mirror(&self.connections, "connections", outcome, total);
            }
            if let Some(cache) = state.registry.host().compiled_cache() {
                let s = cache.stats();
                for (outcome, n) in [
                    ("hit", &s.hits),
                    ("miss", &s.misses),
                    ("rejected", &s.rejected),
                    ("write_failed", &s.write_failures),
                ] {
                    let total = n.load(std::sync::atomic::Ordering::Relaxed);
                    mirror(&self.compiled_cache, "cache", outcome, total);
                }
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.open_connections.set(
            i64::try_from(
                state
                    .connections
                    .open
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .unwrap_or(i64::MAX),
        );
        match state.registry.last_contact() {
            Some((at, lag)) => {
                self.contact_age.set(at.elapsed().as_millis() as i64);
                self.lag.set(lag);
            }
            None => self.contact_age.set(-1),
        }
        for (ruleset, served) in state.registry.all() {
            if let Some(class) = served.module.manifest().strictest_propagation() {
                self.stale
                    .with_label_values(&[ruleset.as_str(), class.as_str()])
                    .set(i64::from(state.registry.is_stale(&served)));
            }
            let source = match served.source {
                flagforge_kafka::Source::Kafka => "kafka",
                flagforge_kafka::Source::Snapshot => "snapshot",
            };
            self.version
                .with_label_values(&[ruleset.as_str(), source])
                .set(served.version as i64);
            if let Some(published) = flagforge_protocol::time::parse_timestamp(&served.created_at) {
                self.module_age
                    .with_label_values(&[ruleset.as_str()])
                    .set(now - published / 1_000_000_000);
            }
            self.serving_for
                .with_label_values(&[ruleset.as_str()])
                .set(served.since.elapsed().as_secs() as i64);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.prom.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
