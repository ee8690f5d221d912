//! Distribution latency on one real broker (tansu, durable sqlite engine, started here): raw
//! produce→consume of a module-sized message vs `Publisher::publish` → every one of three hosts
//! serving the new version, plus wasmtime compile time on its own. A bench binary, not
//! criterion: the figures are latency percentiles of a multi-process path.
//!
//! `cargo bench -p flagforge-benches --bench distribution` runs 40 rounds of each; under
//! `cargo test` (no `--bench` argument) it runs 3 rounds as a smoke test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness: a failed setup aborts the run"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagforge_distribution::{KeyPair, TrustedKeys};
use flagforge_kafka::{KafkaConfig, Publisher, Registry, Subscriber};
use flagforge_testkit::{checkout_module, Broker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use wasm_host::{Host, Limits};

const HOSTS: usize = 3;
const RAW_TOPIC: &str = "bench.raw";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest-rank percentile.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        p50: percentile(&samples, 50.0),
        p99: percentile(&samples, 99.0),
        max: samples[samples.len() - 1],
    }
}

fn row(what: &str, s: &Stats, n: usize) {
    println!(
        "| {what} | {n} | {:.1} | {:.1} | {:.1} |",
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    );
}

/// Produce a module-sized message and time until every one of `readers` consumers, already
/// caught up at the end of the topic, has received it.
async fn raw_latency(broker: &str, payload: &[u8], rounds: usize, readers: usize) -> Vec<Duration> {
    let topic = format!("{RAW_TOPIC}.{readers}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("message.max.bytes", "2000000")
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    // tansu's sqlite engine does not auto-create topics.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", broker)
            .create()
            .expect("admin");
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                &topic,
                1,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await
        .expect("create topic");
    // The same consumer settings as the hosts' subscriber.
    let consumers: Vec<BaseConsumer> = (0..readers)
        .map(|_| {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", broker)
                .set("group.id", "flagforge-bench")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "50")
                .set("max.partition.fetch.bytes", "2000000")
                .set("message.max.bytes", "2000000")
                .create()
                .expect("consumer");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::End)
                .expect("partition");
            c.assign(&tpl).expect("assign");
            // Let the consumer reach the end before timing.
            for _ in 0..20 {
                let _ = c.poll(Duration::from_millis(50));
            }
            c
        })
        .collect();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut body = payload.to_vec();
        body[0] = round as u8;
        let start = Instant::now();
        let received = std::thread::scope(|s| {
            let waiters: Vec<_> = consumers
                .iter()
                .map(|c| {
                    let body = &body;
                    s.spawn(move || loop {
                        match c.poll(Duration::from_millis(1)) {
                            Some(Ok(m)) if m.payload().is_some_and(|p| p == body.as_slice()) => {
                                return start.elapsed()
                            }
                            _ => assert!(start.elapsed() < Duration::from_secs(30), "lost"),
                        }
                    })
                })
                .collect();
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    producer
                        .send(
                            FutureRecord::to(&topic).key("bench").payload(&body),
                            Duration::from_secs(10),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produce");
                })
            });
            waiters
                .into_iter()
                .map(|w| w.join().expect("waiter"))
                .max()
                .expect("at least one reader")
        });
        samples.push(received);
    }
    samples
}

/// Publish alternating modules and time until every host serves the new version.
async fn publish_to_serving(
    config: &KafkaConfig,
    ruleset: &str,
    hosts: usize,
    modules: &[Vec<u8>; 2],
    key: &KeyPair,
    rounds: usize,
) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let trusted = TrustedKeys::new([key.public()]);
    let publisher = Publisher::new(config.clone()).expect("publisher");
    let now = || "2026-11-25T10:00:00Z".to_owned();
    publisher
        .publish(ruleset, modules[1].clone(), key, now(), None, None)
        .await
        .expect("first publish");
    let hosts: Vec<Arc<Registry>> = (0..hosts)
        .map(|_| {
            Arc::new(Registry::new(
                Host::new(Limits::default()).expect("host"),
                trusted.clone(),
                None,
            ))
        })
        .collect();
    let _subs: Vec<Subscriber> = hosts
        .iter()
        .map(|h| Subscriber::start(config, Arc::clone(h)).expect("subscriber"))
        .collect();
    let serving = |v: u64| {
        hosts
            .iter()
            .all(|h| h.get(ruleset).is_some_and(|s| s.version == v))
    };
    let first = publisher
        .latest(ruleset)
        .expect("latest")
        .expect("published")
        .version;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serving(first) {
        assert!(
            Instant::now() < deadline,
            "hosts never served v{first}: {:?}",
            hosts
                .iter()
                .map(|h| (h.get(ruleset).map(|s| s.version), h.rejected()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut end_to_end, mut publish_calls, mut after_return) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = Instant::now();
        let p = publisher
            .publish(ruleset, modules[round % 2].clone(), key, now(), None, None)
            .await
            .expect("publish");
        let returned = start.elapsed();
        publish_calls.push(returned);
        while !serving(p.version) {
            assert!(start.elapsed() < Duration::from_secs(30), "not served");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        end_to_end.push(start.elapsed());
        after_return.push(start.elapsed().saturating_sub(returned));
    }
    (end_to_end, publish_calls, after_return)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 40 } else { 3 };
    let modules = [checkout_module(true), checkout_module(false)];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Broker::start_durable();
    let key = KeyPair::generate().expect("key");
    let config = KafkaConfig::new(broker.addr.clone());

    // Compile time alone: a fresh engine (nothing to reuse), then a new version on a host that
    // compiled the evaluator before (versions alternate, as in the rounds below), then three
    // such hosts at once (what the hosts of this run do on this machine's cores).
    let cold: Vec<Duration> = (0..rounds.min(10))
        .map(|_| {
            let host = Host::new(Limits::default()).expect("host");
            let t = Instant::now();
            host.load(&modules[0]).expect("load");
            t.elapsed()
        })
        .collect();
    let warm = |host: &Host| {
        for m in &modules {
            host.load(m).expect("warm");
        }
    };
    let host = Host::new(Limits::default()).expect("host");
    warm(&host);
    let compile: Vec<Duration> = (0..rounds.min(20))
        .map(|round| {
            let t = Instant::now();
            host.load(&modules[round % 2]).expect("load");
            t.elapsed()
        })
        .collect();
    let hosts: Vec<Host> = (0..HOSTS)
        .map(|_| Host::new(Limits::default()).expect("host"))
        .collect();
    hosts.iter().for_each(warm);
    let compile3: Vec<Duration> = (0..rounds.min(10))
        .map(|round| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for h in &hosts {
                    s.spawn(|| h.load(&modules[round % 2]).expect("load"));
                }
            });
            t.elapsed()
        })
        .collect();

    let raw1 = rt.block_on(raw_latency(&broker.addr, &modules[0], rounds, 1));
    let raw = rt.block_on(raw_latency(&broker.addr, &modules[0], rounds, HOSTS));
    let (e2e1, _, _) = rt.block_on(publish_to_serving(
        &config, "checkout", 1, &modules, &key, rounds,
    ));
    let (e2e, calls, after) = rt.block_on(publish_to_serving(
        &config, "checkout", HOSTS, &modules, &key, rounds,
    ));
    let (raw1, raw, e2e1, e2e, calls, after) = (
        stats(raw1),
        stats(raw),
        stats(e2e1),
        stats(e2e),
        stats(calls),
        stats(after),
    );
    let (cold, compile, compile3) = (stats(cold), stats(compile), stats(compile3));

    println!(
        "\ndistribution latency, tansu 0.6.0 sqlite engine on loopback, module {} bytes, {HOSTS} hosts\n",
        modules[0].len()
    );
    println!("| measure | n | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    row("raw produce→consume, 1 consumer", &raw1, rounds);
    row("raw produce→consume, all 3 consumers", &raw, rounds);
    row("`publish()` call returns", &calls, rounds);
    row("publish → the host serving, 1 host", &e2e1, rounds);
    row("publish → every host serving, 3 hosts", &e2e, rounds);
    row(
        "`publish()` returned → every host serving, 3 hosts",
        &after,
        rounds,
    );
    row("load, fresh engine (nothing reused)", &cold, rounds.min(10));
    row(
        "load a new version, one host alone",
        &compile,
        rounds.min(20),
    );
    row(
        "load a new version, 3 hosts at once (wall)",
        &compile3,
        rounds.min(10),
    );
    let verdict = |measured: Duration, budget: Duration| {
        format!(
            "{:.1} ms; budget {:.1} ms → {} ({:.2}× the budget)",
            ms(measured),
            ms(budget),
            if measured <= budget { "met" } else { "MISSED" },
            measured.as_secs_f64() / budget.as_secs_f64()
        )
    };
    println!(
        "p50, a new version on a host that compiled the evaluator before: {}",
        verdict(compile.p50, Duration::from_millis(10))
    );
    println!(
        "p50, publish → every one of {HOSTS} hosts serving: {} (raw all-consumer latency + 25 ms)",
        verdict(e2e.p50, raw.p50 + Duration::from_millis(25))
    );
    println!(
        "p50, module produced (`publish()` returned) → every one of {HOSTS} hosts serving: {}",
        verdict(after.p50, raw.p50 + Duration::from_millis(25))
    );
    println!(
        "p50, publish → the host serving, 1 host: {} (raw latency + 25 ms)",
        verdict(e2e1.p50, raw1.p50 + Duration::from_millis(25))
    );
}
