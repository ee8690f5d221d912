//! The distribution half of the main job: publish the checkout module to a broker (librdkafka's
//! in-process mock cluster by default, or `--brokers`), let three hosts pick it up, flip a kill
//! switch by publishing a new version, and print how long each host took to serve it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use flagforge_distribution::{KeyPair, SnapshotDir, TrustedKeys};
use flagforge_kafka::{KafkaConfig, Publisher, Registry, Subscriber, MODULES_TOPIC};
use flagforge_protocol::{Context, Value};
use wasm_host::{Host, Limits};

const HOSTS: usize = 3;

fn fraud_engine(registry: &Registry, market: &str) -> String {
    let Some(served) = registry.get("checkout") else {
        return "-".into();
    };
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from(market));
    let r = served
        .module
        .evaluate("FraudEngineRoutingMode", &ctx, false);
    format!("{} ({})", r.variant.unwrap_or_default(), r.reason.as_str())
}

/// Builds the checkout ruleset, optionally with the ops team's kill switch extended to France.
fn build(examples: &Path, kill_switch_in_france: bool) -> Result<Vec<u8>> {
    let (from, to) = (
        "when: 'market == \"IT\"'",
        "when: 'market in [\"IT\", \"FR\"]'",
    );
    let mut edited = false;
    let compiled =
        flagforge_compiler::compile_path_edited(&examples.join("checkout"), |path, text| {
            if kill_switch_in_france && path.ends_with("ops.yaml") && text.contains(from) {
                edited = true;
                return text.replace(from, to);
            }
            text
        })
        .map_err(|e| anyhow!("{e}"))?;
    if kill_switch_in_france && !edited {
        bail!(
            "could not find the kill switch rule in {}",
            examples.display()
        );
    }
    Ok(compiled.module)
}

async fn wait_all(hosts: &[Arc<Registry>], version: u64, start: Instant) -> Result<Vec<Duration>> {
    let deadline = start + Duration::from_secs(30);
    let mut took = vec![None; hosts.len()];
    while took.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            bail!("hosts did not all serve version {version} within 30 s");
        }
        for (i, h) in hosts.iter().enumerate() {
            if took[i].is_none() && h.get("checkout").is_some_and(|s| s.version >= version) {
                took[i] = Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(took.into_iter().flatten().collect())
}

/// Runs the loop against `brokers`, or an in-process mock cluster when `None`.
pub fn run(examples: &Path, brokers: Option<&str>) -> Result<()> {
    // The mock cluster lives for the whole demo; it cannot create topics through the admin
    // API, so the topics are created on it directly.
    let mock = match brokers {
        Some(_) => None,
        None => {
            let m = rdkafka::mocking::MockCluster::new(1)
                .context("starting the in-process Kafka mock cluster")?;
            m.create_topic(MODULES_TOPIC, 1, 1)
                .context("creating the modules topic")?;
            m.create_topic(flagforge_kafka::AUDIT_TOPIC, 1, 1)
                .context("creating the audit topic")?;
            Some(m)
        }
    };
    let bootstrap = match (&mock, brokers) {
        (Some(m), _) => m.bootstrap_servers(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let where_ = if mock.is_some() {
        "librdkafka's in-process mock cluster".to_owned()
    } else {
        format!("the broker at {bootstrap}")
    };
    outln!("━━ distribution through Kafka ({where_})");
    let config = KafkaConfig::new(bootstrap);
    let key = KeyPair::generate()?;
    let trusted = TrustedKeys::new([key.public()]);
    let (v1, v2) = (build(examples, false)?, build(examples, true)?);
    let snapshots = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let publisher = Publisher::new(config.clone())?;
        let stamp = || crate::now_rfc3339();
        let t0 = Instant::now();
        let p1 = publisher.publish("checkout", v1, &key, stamp(), Some("initial release".into()), None).await?;
        outln!("   published checkout v{} (sha256 {}…) in {:.1} ms, signed by {}", p1.version, &p1.sha256[..16], t0.elapsed().as_secs_f64() * 1e3, key.public().id());

        let mut hosts = Vec::new();
        let mut subscribers = Vec::new();
        let t1 = Instant::now();
        for i in 0..HOSTS {
            let dir = SnapshotDir::open(&snapshots.path().join(format!("host-{}", i + 1)))?;
            let registry = Arc::new(Registry::new(Host::new(Limits::default())?, trusted.clone(), Some(dir)));
            subscribers.push(Subscriber::start(&config, Arc::clone(&registry))?);
            hosts.push(registry);
        }
        let took = wait_all(&hosts, p1.version, t1).await?;
        for (i, (h, t)) in hosts.iter().zip(&took).enumerate() {
            outln!("   host-{}: serving v{} after {:>7.1} ms (start, read topic, verify, compile) — FraudEngineRoutingMode for FR: {}", i + 1, p1.version, t.as_secs_f64() * 1e3, fraud_engine(h, "FR"));
        }

        outln!("\n   the risk team switches the v3 fraud engine off in France: publishing a new version");
        let t2 = Instant::now();
        let p2 = publisher.publish("checkout", v2, &key, stamp(), Some("kill v3 fraud engine in FR".into()), Some("INC-2026-11".into())).await?;
        let published = t2.elapsed();
        let took = wait_all(&hosts, p2.version, t2).await?;
        outln!("   published checkout v{} in {:.1} ms", p2.version, published.as_secs_f64() * 1e3);
        for (i, (h, t)) in hosts.iter().zip(&took).enumerate() {
            outln!("   host-{}: serving v{} {:>7.1} ms after the publish started — FraudEngineRoutingMode for FR: {}", i + 1, p2.version, t.as_secs_f64() * 1e3, fraud_engine(h, "FR"));
        }
        // What the audit topic now says (the semantic diff is computed from the modules).
        outln!("\n   audit trail ({}):", flagforge_kafka::AUDIT_TOPIC);
        let records = tokio::task::block_in_place(|| flagforge_kafka::read_topic(&config, flagforge_kafka::AUDIT_TOPIC))?;
        let values: Vec<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
        match flagforge_governance::audit::verify_chain(&values) {
            Ok(chain) => {
                for r in &chain {
                    let e = &r.envelope;
                    outln!("   #{} checkout v{} by {} — {}{}", r.seq, e.version, r.author, e.reason.as_deref().unwrap_or(""), e.change.as_ref().map_or(String::new(), |c| format!(" ({c})")));
                    let changes = r.changes();
                    if changes.len() > 3 {
                        outln!("       {} flags defined", changes.len());
                    } else {
                        for c in changes {
                            outln!("       {}", c.summary().replace('\n', "\n       "));
                        }
                    }
                }
                outln!("   chain verified: {} records, each naming the previous record's sha256", chain.len());
            }
            Err(b) => outln!("   audit chain broken at record #{}: {}", b.index, b.reason),
        }
        drop(subscribers);
        Ok::<_, anyhow::Error>(())
    })?;
    // Stop every client (their tasks live on the runtime) before the cluster goes away.
    drop(runtime);
    drop(mock);
    Ok(())
}
