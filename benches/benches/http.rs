//! OFREP request latency of `flagforge host` with and without hostile connections held open,
//! side by side in one run (issue #12: "normal requests keep their latency").
//!
//! A snapshot-only host (no broker) with the default `HttpLimits` serves the checkout module.
//! One client sends single-flag OFREP requests on a kept-alive connection, in alternating
//! phases: quiet, then with hostile connections open (idle sockets, slowloris header
//! dribblers, 10 GiB body announcements with 10 bytes sent), repeated. Each phase is the same
//! number of requests; the figures are per-request latency percentiles and their ratio.
//!
//!   cargo bench -p flagforge-benches --bench http
//!   HOSTILE=2000 ROUNDS=5 cargo bench -p flagforge-benches --bench http
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark binary: a failed assumption aborts the run"
)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flagforge_daemon::{start, DaemonConfig, HttpLimits};
use flagforge_distribution::{Draft, Envelope, KeyPair, SnapshotDir, TrustedKeys};
use flagforge_testkit::checkout_module;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latencies of `n` OFREP requests on one kept-alive connection, in microseconds.
fn phase(agent: &ureq::Agent, base: &str, n: usize) -> Vec<f64> {
    let url = format!("{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode");
    let body = r#"{"context":{"market":"FR","tenant":"acme-fr"}}"#;
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut r = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body)
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.body_mut().read_to_vec().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// Opens `n` hostile connections of three kinds; a thread keeps the slowloris ones dribbling
/// (and reopens whatever the server closed) until `stop`.
fn hostile(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    fn open(addr: SocketAddr, kind: usize) -> Option<TcpStream> {
        let mut s = TcpStream::connect(addr).ok()?;
        match kind % 3 {
            0 => {}
            1 => s
                .write_all(b"POST /ofrep/v1/evaluate/flags/X HTTP/1.1\r\nhost: x\r\n")
                .ok()?,
            _ => s
                .write_all(
                    b"POST /ofrep/v1/evaluate/flags/X HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10737418240\r\n\r\n0123456789",
                )
                .ok()?,
        }
        Some(s)
    }
    let mut conns: Vec<(usize, Option<TcpStream>)> = (0..n).map(|i| (i, open(addr, i))).collect();
    std::thread::spawn(move || {
        let mut reopened = 0;
        while !stop.load(Ordering::Relaxed) {
            for (kind, c) in &mut conns {
                let alive = match c {
                    Some(s) if *kind % 3 == 1 => s.write_all(b"x").is_ok(),
                    Some(_) => true,
                    None => false,
                };
                if !alive {
                    *c = open(addr, *kind);
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        reopened
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let hostile_n = env_or("HOSTILE", 1000);
    let rounds = env_or("ROUNDS", 3);
    let per_phase = env_or("REQUESTS", 2000);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = KeyPair::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = Envelope::sign(
        Draft {
            ruleset: "checkout".into(),
            version: 1,
            module: checkout_module(false),
            created_at: "2026-11-28T10:00:00Z".into(),
            ..Draft::default()
        },
        &key,
    );
    SnapshotDir::open(dir.path()).unwrap().store(&env).unwrap();
    let limits = HttpLimits::default();
    let running = rt
        .block_on(start(DaemonConfig {
            kafka: None,
            trusted: TrustedKeys::new([key.public()]),
            snapshot_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            rulesets: vec!["checkout".into()],
            cors_origin: None,
            ofrep_errors: flagforge_daemon::OfrepErrors::Spec,
            decision_keys: TrustedKeys::default(),
            compiled_cache: false,
            trust: None,
            http: limits,
        }))
        .unwrap();
    let base = format!("http://{}", running.addr);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    // Warm-up: instances pooled, connection open.
    let _ = phase(&agent, &base, 500);

    println!(
        "flagforge host, default HttpLimits ({limits:?}); {per_phase} OFREP requests per phase, {rounds} round(s), {hostile_n} hostile connections (idle, slowloris, 10 GiB announcements)"
    );
    let (mut quiet, mut attacked) = (Vec::new(), Vec::new());
    let mut reopened = 0;
    for _ in 0..rounds {
        quiet.extend(phase(&agent, &base, per_phase));
        let stop = Arc::new(AtomicBool::new(false));
        let attack = hostile(running.addr, hostile_n, Arc::clone(&stop));
        std::thread::sleep(Duration::from_millis(200));
        attacked.extend(phase(&agent, &base, per_phase));
        stop.store(true, Ordering::Relaxed);
        reopened += attack.join().unwrap();
    }
    quiet.sort_by(f64::total_cmp);
    attacked.sort_by(f64::total_cmp);
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "", "p50 µs", "p99 µs", "max µs"
    );
    for (name, v) in [("quiet", &quiet), ("attacked", &attacked)] {
        println!(
            "{name:<10} {:>10.1} {:>10.1} {:>10.1}",
            percentile(v, 0.5),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    }
    println!(
        "ratio attacked/quiet: p50 {:.2}x, p99 {:.2}x; hostile connections reopened after the server closed them: {reopened}",
        percentile(&attacked, 0.5) / percentile(&quiet, 0.5),
        percentile(&attacked, 0.99) / percentile(&quiet, 0.99)
    );
}
