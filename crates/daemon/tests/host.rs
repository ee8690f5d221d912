//! `flagforge host` against a real broker (tansu started by the test): OFREP answers v1, then
//! v2 without a restart; poison is rejected and visible in /metrics while the last good
//! version serves; with the broker stopped it keeps answering; restarted with the broker still
//! down, it answers from its snapshot. Then what production does to a host: its broker comes
//! back empty under load, it starts with no broker at all, and clients hold connections open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

use std::time::{Duration, Instant};

use flagforge_daemon::{start, DaemonConfig, HttpLimits, OfrepErrors};
use flagforge_distribution::{KeyPair, TrustedKeys};
use flagforge_kafka::{KafkaConfig, Publisher, MODULES_TOPIC};
use flagforge_testkit::{checkout_module, Broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

fn call(method: &str, url: &str, body: Option<&str>, if_none_match: Option<&str>) -> Reply {
    let a = agent();
    let mut resp = match method {
        "POST" => {
            let mut req = a.post(url).header("content-type", "application/json");
            if let Some(t) = if_none_match {
                req = req.header("if-none-match", t);
            }
            req.send(body.unwrap_or("")).unwrap()
        }
        _ => {
            let mut req = a.get(url);
            if let Some(t) = if_none_match {
                req = req.header("if-none-match", t);
            }
            req.call().unwrap()
        }
    };
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.body_mut().read_to_vec().unwrap_or_default();
    Reply { status, etag, body }
}

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn fraud_engine_in_france(base: &str) -> (String, u64) {
    let r = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"),
        Some(r#"{"context":{"market":"FR"}}"#),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = json(&r);
    (
        v["variant"].as_str().unwrap().to_owned(),
        v["metadata"]["version"].as_u64().unwrap(),
    )
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn host_serves_ofrep_swaps_versions_survives_the_broker_and_restarts_from_snapshot() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::start();
    let kafka = KafkaConfig::new(broker.addr.clone());
    let key = KeyPair::generate().unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let (v1, v2) = (checkout_module(false), checkout_module(true));
    let publisher = Publisher::new(kafka.clone()).unwrap();
    let now = || "2026-11-25T10:00:00Z".to_owned();
    rt.block_on(publisher.publish("checkout", v1.clone(), &key, now(), None, None))
        .unwrap();

    let decider = KeyPair::generate().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let config = DaemonConfig {
        kafka: Some(kafka.clone()),
        trusted: trusted.clone(),
        snapshot_dir: snapshots.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        rulesets: vec!["checkout".into()],
        cors_origin: Some("*".into()),
        ofrep_errors: OfrepErrors::Spec,
        decision_keys: TrustedKeys::new([decider.public()]),
        compiled_cache: true,
        trust: None,
        http: HttpLimits::default(),
    };
    let running = rt.block_on(start(config.clone())).unwrap();
    let base = format!("http://{}", running.addr);
    assert_eq!(
        call("GET", &format!("{base}/healthz"), None, None).status,
        200
    );
    wait_until("the host is ready", || {
        call("GET", &format!("{base}/readyz"), None, None).status == 200
    });
    assert_eq!(fraud_engine_in_france(&base), ("engine_v3".into(), 1));

    // OFREP errors: unknown flag, unusable body.
    let missing = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags/NoSuchFlag"),
        Some("{}"),
        None,
    );
    assert_eq!(
        (missing.status, json(&missing)["errorCode"].as_str()),
        (404, Some("FLAG_NOT_FOUND"))
    );
    let bad = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"),
        Some("{nope"),
        None,
    );
    assert_eq!(
        (bad.status, json(&bad)["errorCode"].as_str()),
        (400, Some("PARSE_ERROR"))
    );
    // A wrong-typed attribute: an OFREP error response (see `ofrep_answers_as_the_spec_defines`).
    let typed = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"),
        Some(r#"{"context":{"market":33}}"#),
        None,
    );
    assert_eq!(
        (typed.status, json(&typed)["errorCode"].as_str()),
        (400, Some("TYPE_MISMATCH"))
    );

    // Bulk with ETag and 304.
    let bulk = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags"),
        Some(r#"{"context":{"market":"FR","now":"2026-12-01T00:00:00Z"}}"#),
        None,
    );
    assert_eq!(bulk.status, 200);
    assert_eq!(json(&bulk)["flags"].as_array().unwrap().len(), 9);
    let etag = bulk.etag.clone().unwrap();
    let again = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags"),
        Some(r#"{"context":{"market":"FR","now":"2026-12-01T00:00:00Z"}}"#),
        Some(&etag),
    );
    assert_eq!(again.status, 304);

    // Module download with ETag = sha256.
    let m = call("GET", &format!("{base}/v1/modules/checkout"), None, None);
    assert_eq!((m.status, m.body == v1), (200, true));
    let m_etag = m.etag.unwrap();
    assert_eq!(
        call(
            "GET",
            &format!("{base}/v1/modules/checkout"),
            None,
            Some(&m_etag)
        )
        .status,
        304
    );

    // CORS for browser pages (configured with `*` here).
    let pre = agent()
        .options(&format!("{base}/v1/modules/checkout"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "GET")
        .call()
        .unwrap();
    assert_eq!(
        pre.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );

    // Server-sent events: the current module first, then each new version.
    let (tx, events) = std::sync::mpsc::channel::<String>();
    let events_url = format!("{base}/v1/modules/checkout/events");
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&events_url).call().unwrap();
        let reader = std::io::BufReader::new(resp.body_mut().as_reader());
        for line in std::io::BufRead::lines(reader) {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data:") {
                if tx.send(data.trim().to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    let next_event = || -> Value {
        let data = events
            .recv_timeout(Duration::from_secs(20))
            .expect("an event");
        serde_json::from_str(&data).unwrap()
    };
    let first = next_event();
    assert_eq!(first["version"], 1);
    assert_eq!(first["sha256"], m_etag.trim_matches('"'));

    // v2 is served without a restart.
    rt.block_on(publisher.publish(
        "checkout",
        v2.clone(),
        &key,
        now(),
        Some("kill v3 in FR".into()),
        None,
    ))
    .unwrap();
    wait_until("v2 answers", || {
        fraud_engine_in_france(&base) == ("engine_v2".into(), 2)
    });
    assert_eq!(next_event()["version"], 2, "the events stream announces v2");

    // A decision context decided at the edge on v1 (v3 fraud engine in France): the host now
    // serves v2 but answers the carried decision, and counts the mismatch.
    let v1_module = wasm_host::Host::new(wasm_host::Limits::default())
        .unwrap()
        .load(&v1)
        .unwrap();
    let mut fr = flagforge_protocol::Context::new();
    fr.insert("market".into(), flagforge_protocol::Value::from("FR"));
    let carried = flagforge_decision::decide(
        &v1_module,
        Some(1),
        &["FraudEngineRoutingMode"],
        &fr,
        "order-7",
        flagforge_decision::now_ms(),
        60_000,
    )
    .unwrap();
    let with_decision = |header: &str| {
        let mut resp = agent()
            .post(&format!(
                "{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"
            ))
            .header("content-type", "application/json")
            .header(flagforge_decision::HEADER, header)
            .send(r#"{"context":{"market":"FR"}}"#)
            .unwrap();
        serde_json::from_slice::<Value>(&resp.body_mut().read_to_vec().unwrap()).unwrap()
    };
    let answer = with_decision(&carried.encode(&decider));
    assert_eq!(answer["variant"], "engine_v3");
    assert_eq!(answer["reason"], "CACHED");
    assert_eq!(answer["metadata"]["decision"], "carried");
    let forged = with_decision(&carried.encode(&KeyPair::generate().unwrap()));
    // A refused decision context fails the evaluation: an OFREP error response (with
    // `--ofrep-errors fallback`, the flag's failure policy would answer).
    assert_eq!(
        (forged["errorCode"].as_str(), forged.get("value")),
        (Some("INVALID_CONTEXT"), None),
        "{forged}"
    );
    assert_eq!(forged["metadata"]["decision"], "unknown_key");
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    assert!(
        metrics.contains("flagforge_decision_mismatches_total{flag=\"FraudEngineRoutingMode\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("flagforge_decision_contexts_total{outcome=\"unknown_key\"} 1"));

    // Poison is rejected and counted; the last good version keeps serving.
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    rt.block_on(
        raw.send(
            FutureRecord::to(MODULES_TOPIC)
                .key("checkout")
                .payload("garbage".as_bytes()),
            Duration::from_secs(10),
        ),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    wait_until("the garbage message shows in /metrics", || {
        let body = call("GET", &format!("{base}/metrics"), None, None).body;
        String::from_utf8_lossy(&body)
            .contains("flagforge_envelopes_rejected_total{reason=\"garbage\"} 1")
    });
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    assert!(
        metrics.contains("flagforge_module_version{ruleset=\"checkout\",source=\"kafka\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flagforge_evaluations_total{flag=\"FraudEngineRoutingMode\""),
        "{metrics}"
    );
    assert_eq!(fraud_engine_in_france(&base), ("engine_v2".into(), 2));

    // With the broker reachable the ruleset is fresh; its strictest flag (the ops kill switch)
    // is `immediate` (≤ 1 s).
    let stale_line = |v: u8| {
        format!("flagforge_ruleset_stale{{propagation=\"immediate\",ruleset=\"checkout\"}} {v}")
    };
    wait_until("the ruleset reports fresh", || {
        String::from_utf8_lossy(&call("GET", &format!("{base}/metrics"), None, None).body)
            .contains(&stale_line(0))
    });

    // The broker stops: the host keeps answering, and reports the ruleset stale.
    drop(broker);
    assert_eq!(fraud_engine_in_france(&base), ("engine_v2".into(), 2));
    wait_until("the ruleset reports stale", || {
        String::from_utf8_lossy(&call("GET", &format!("{base}/metrics"), None, None).body)
            .contains(&stale_line(1))
    });
    assert_eq!(
        json(&call("GET", &format!("{base}/readyz"), None, None))["rulesets"][0]["stale"],
        true
    );

    // Restart the host with the broker still down: it answers from its snapshot.
    drop(running);
    let restarted = rt.block_on(start(config)).unwrap();
    let base = format!("http://{}", restarted.addr);
    let ready = call("GET", &format!("{base}/readyz"), None, None);
    assert_eq!(ready.status, 200);
    assert_eq!(json(&ready)["rulesets"][0]["source"], "snapshot");
    assert_eq!(fraud_engine_in_france(&base), ("engine_v2".into(), 2));
    // ... without compiling it: v2's native code was cached when it was first loaded.
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    assert!(
        metrics.contains("flagforge_compiled_cache_total{outcome=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"miss\""), "{metrics}");
}

fn daemon_config(
    kafka: Option<KafkaConfig>,
    trusted: TrustedKeys,
    dir: &std::path::Path,
) -> DaemonConfig {
    DaemonConfig {
        kafka,
        trusted,
        snapshot_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        rulesets: vec!["checkout".into()],
        cors_origin: None,
        ofrep_errors: OfrepErrors::Spec,
        decision_keys: TrustedKeys::default(),
        compiled_cache: true,
        trust: None,
        http: HttpLimits::default(),
    }
}

/// A signing key and a snapshot directory holding checkout v1 signed by it: a host started on
/// it serves without a broker.
fn snapshot_of_checkout_v1() -> (KeyPair, tempfile::TempDir) {
    let key = KeyPair::generate().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let env = flagforge_distribution::Envelope::sign(
        flagforge_distribution::Draft {
            ruleset: "checkout".into(),
            version: 1,
            module: checkout_module(false),
            created_at: "2026-11-28T10:00:00Z".into(),
            ..flagforge_distribution::Draft::default()
        },
        &key,
    );
    flagforge_distribution::SnapshotDir::open(snapshots.path())
        .unwrap()
        .store(&env)
        .unwrap();
    (key, snapshots)
}

fn readyz(base: &str) -> Value {
    json(&call("GET", &format!("{base}/readyz"), None, None))
}

fn stale(base: &str) -> bool {
    readyz(base)["rulesets"][0]["stale"] == Value::Bool(true)
}

/// The crash of issue #12: the broker comes back without its data while the host serves
/// requests. The host keeps answering every request, reports stale while the broker is gone,
/// and serves the next release (a new epoch, numbered from 1 again).
#[test]
fn a_broker_that_comes_back_empty_under_load_neither_crashes_nor_silences_the_host() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut broker = Broker::start();
    let kafka = KafkaConfig::new(broker.addr.clone());
    let key = KeyPair::generate().unwrap();
    let (v1, v2) = (checkout_module(false), checkout_module(true));
    let publisher = Publisher::new(kafka.clone()).unwrap();
    let now = || "2026-11-28T10:00:00Z".to_owned();
    rt.block_on(publisher.publish("checkout", v1.clone(), &key, now(), None, None))
        .unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let running = rt
        .block_on(start(daemon_config(
            Some(kafka.clone()),
            TrustedKeys::new([key.public()]),
            snapshots.path(),
        )))
        .unwrap();
    let base = format!("http://{}", running.addr);
    wait_until("the host serves v1", || {
        call("GET", &format!("{base}/readyz"), None, None).status == 200
    });
    wait_until("the host is fresh", || !stale(&base));

    // Load: two clients evaluating continuously; every answer must be a 200.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, base) = (std::sync::Arc::clone(&stop), base.clone());
            std::thread::spawn(move || {
                let mut answered = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = call(
                        "POST",
                        &format!("{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"),
                        Some(r#"{"context":{"market":"FR"}}"#),
                        None,
                    );
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    answered += 1;
                }
                answered
            })
        })
        .collect();

    // Three times: the broker dies and comes back empty on the same port.
    for round in 0..3 {
        broker.stop();
        wait_until("the host reports stale without its broker", || stale(&base));
        broker.resume();
        std::thread::sleep(Duration::from_millis(1500 + 1000 * round));
    }
    // The next release reaches the host: after data loss it starts a new epoch.
    let fresh = Publisher::new(kafka.clone()).unwrap();
    let p = rt
        .block_on(fresh.publish(
            "checkout",
            v2.clone(),
            &key,
            now(),
            Some("kill".into()),
            None,
        ))
        .unwrap();
    assert!(p.new_epoch, "{p:?}");
    assert_eq!(p.version, 1);
    wait_until(
        "the host serves the release published after the data loss",
        || fraud_engine_in_france(&base).0 == "engine_v2",
    );
    wait_until("the host is fresh again", || !stale(&base));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(answered > 0);
    eprintln!("answered {answered} requests across three empty broker restarts");
}

/// A host whose broker never answered is stale from the start (it serves its snapshot).
#[test]
fn a_host_that_never_reached_its_broker_reports_stale() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, snapshots) = snapshot_of_checkout_v1();
    // Nothing listens on this port.
    let nowhere = format!("127.0.0.1:{}", flagforge_testkit::free_port());
    let running = rt
        .block_on(start(daemon_config(
            Some(KafkaConfig::new(nowhere)),
            TrustedKeys::new([key.public()]),
            snapshots.path(),
        )))
        .unwrap();
    let base = format!("http://{}", running.addr);
    // Give the probe time to (fail to) reach the broker several times.
    std::thread::sleep(Duration::from_secs(2));
    let ready = readyz(&base);
    assert_eq!(ready["ready"], Value::Bool(true), "{ready}");
    assert_eq!(ready["rulesets"][0]["stale"], Value::Bool(true), "{ready}");
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    assert!(
        metrics
            .contains("flagforge_ruleset_stale{propagation=\"immediate\",ruleset=\"checkout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flagforge_broker_contact_age_milliseconds -1"),
        "{metrics}"
    );
}

/// Idle, slowloris and oversized-announcement connections are closed within the configured
/// timeouts, connections over the cap are closed on accept, and normal requests keep being
/// answered meanwhile.
#[test]
fn idle_slow_and_oversized_connections_are_closed_while_normal_requests_are_answered() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, snapshots) = snapshot_of_checkout_v1();
    let mut config = daemon_config(None, TrustedKeys::new([key.public()]), snapshots.path());
    config.http = HttpLimits {
        max_connections: 40,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        max_body_bytes: 64 * 1024,
    };
    let running = rt.block_on(start(config)).unwrap();
    let addr = running.addr;
    let base = format!("http://{addr}");

    /// How long until the server closes `s` (reads until EOF or a reset), at most 10 s.
    fn closed_after(mut s: TcpStream) -> Duration {
        let t = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return t.elapsed(),
                Ok(_) => {}
            }
        }
    }
    let evaluate = "POST /ofrep/v1/evaluate/flags/FraudEngineRoutingMode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";

    // Idle: connects and sends nothing.
    let idle = TcpStream::connect(addr).unwrap();
    // Slowloris: a header byte every 300 ms, never finishing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"POST /ofrep/v1/evaluate/flags/X HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let slow_writer = {
        let mut s = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..40 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    // A 10 GiB body announced, 10 bytes sent.
    let mut huge = TcpStream::connect(addr).unwrap();
    huge.write_all(format!("{evaluate}content-length: 10737418240\r\n\r\n0123456789").as_bytes())
        .unwrap();
    // A body announced within bounds but never finished (slow body).
    let mut slow_body = TcpStream::connect(addr).unwrap();
    slow_body
        .write_all(format!("{evaluate}content-length: 1000\r\n\r\n{{\"context\":").as_bytes())
        .unwrap();
    // Idle after one request on a kept-alive connection.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(format!("{evaluate}content-length: 2\r\n\r\n{{}}").as_bytes())
        .unwrap();

    // Normal requests keep being answered while those are open.
    let answered = std::thread::spawn({
        let base = base.clone();
        move || {
            let t = Instant::now();
            let mut n = 0;
            while t.elapsed() < Duration::from_secs(3) {
                assert_eq!(fraud_engine_in_france(&base).0, "engine_v3");
                n += 1;
            }
            n
        }
    });
    let waits: Vec<(&str, Duration)> = vec![
        ("idle", closed_after(idle)),
        ("slowloris", closed_after(slow)),
        ("oversized announcement", closed_after(huge)),
        ("slow body", closed_after(slow_body)),
        ("idle keep-alive", closed_after(kept)),
    ];
    slow_writer.join().unwrap();
    for (what, waited) in &waits {
        // Generous margins: the bound is the configured timeout, the check interval and a
        // loaded machine; a connection that is never closed waits the full 10 s.
        assert!(
            *waited < Duration::from_secs(6),
            "{what} was held {waited:?}"
        );
    }
    assert!(answered.join().unwrap() > 0);

    // A client that requests module downloads and never reads the answers: the writes stall,
    // and the idle timeout closes the connection.
    let mut stalled = TcpStream::connect(addr).unwrap();
    let get = "GET /v1/modules/checkout HTTP/1.1\r\nhost: x\r\n\r\n".repeat(64);
    stalled.write_all(get.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    let idle_closed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flagforge_http_connections_total{outcome=\"idle_closed\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(idle_closed >= Some(1), "{metrics}");
    assert!(closed_after(stalled) < Duration::from_secs(5));

    // Over the cap: the extra connections are closed on accept, and once the idle ones are
    // gone, requests are answered again.
    let hold: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = TcpStream::connect(addr).unwrap();
    assert!(closed_after(extra) < Duration::from_secs(1));
    drop(hold);
    wait_until("requests are answered after the flood", || {
        agent()
            .get(&format!("{base}/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    assert!(
        metrics.contains("flagforge_http_connections_total{outcome=\"refused\"}"),
        "{metrics}"
    );

    // A host without --decision-key ignores a decision header (counted), and a JSON body
    // that is not an object is refused.
    let r = agent()
        .post(&format!(
            "{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"
        ))
        .header("content-type", "application/json")
        .header(flagforge_decision::HEADER, "not-a-decision")
        .send(r#"{"context":{"market":"IT"}}"#)
        .unwrap();
    assert_eq!(r.status(), 200);
    let array = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags/FraudEngineRoutingMode"),
        Some("[1, 2]"),
        None,
    );
    assert_eq!(array.status, 400);
    let metrics =
        String::from_utf8(call("GET", &format!("{base}/metrics"), None, None).body).unwrap();
    assert!(
        metrics.contains("flagforge_decision_contexts_total{outcome=\"ignored\"} 1"),
        "{metrics}"
    );
    eprintln!("closed after: {waits:?}");
}

fn preflight(url: &str, origin: &str) -> (u16, Option<String>, Option<String>) {
    let resp = agent()
        .options(url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .call()
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (
        resp.status().as_u16(),
        header("access-control-allow-origin"),
        header("access-control-allow-headers"),
    )
}

#[test]
fn ofrep_answers_as_the_spec_defines() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Nothing loaded yet: an OFREP error response (500, PROVIDER_NOT_READY), not a 503.
    let empty = tempfile::tempdir().unwrap();
    let mut config = daemon_config(None, TrustedKeys::default(), empty.path());
    config.cors_origin = Some("https://shop.example, https://admin.example".into());
    let running = rt.block_on(start(config)).unwrap();
    let base = format!("http://{}", running.addr);
    let one = format!("{base}/ofrep/v1/evaluate/flags/FreeShippingThreshold");
    let not_ready = call("POST", &one, Some("{}"), None);
    let v = json(&not_ready);
    assert_eq!(
        (not_ready.status, v["errorCode"].as_str(), v["key"].as_str()),
        (
            500,
            Some("PROVIDER_NOT_READY"),
            Some("FreeShippingThreshold")
        )
    );
    let bulk = call(
        "POST",
        &format!("{base}/ofrep/v1/evaluate/flags"),
        Some("{}"),
        None,
    );
    assert_eq!(
        (bulk.status, json(&bulk)["errorCode"].as_str()),
        (500, Some("PROVIDER_NOT_READY"))
    );
    // CORS on the OFREP routes: preflight answered for listed origins only.
    let (status, origin, headers) = preflight(&one, "https://admin.example");
    assert_eq!(
        (status, origin.as_deref()),
        (200, Some("https://admin.example"))
    );
    assert!(headers.unwrap().contains("content-type"));
    assert_eq!(preflight(&one, "https://evil.example").1, None);
    drop(running);

    for mode in [OfrepErrors::Spec, OfrepErrors::Fallback] {
        let (key, snapshots) = snapshot_of_checkout_v1();
        let mut config = daemon_config(None, TrustedKeys::new([key.public()]), snapshots.path());
        config.ofrep_errors = mode;
        let running = rt.block_on(start(config)).unwrap();
        let base = format!("http://{}", running.addr);
        let one = format!("{base}/ofrep/v1/evaluate/flags/FreeShippingThreshold");
        // A float flag stays a float (50.0, not 50); targetingKey buckets like customer_id.
        let r = call("POST", &one, Some(r#"{"context":{"market":"IT"}}"#), None);
        let text = String::from_utf8_lossy(&r.body);
        assert!(text.contains(r#""value":50.0"#), "{text}");
        let by_attr = json(&call(
            "POST",
            &one,
            Some(r#"{"context":{"market":"DE","customer_id":"c-2001"}}"#),
            None,
        ));
        let by_key = json(&call(
            "POST",
            &one,
            Some(r#"{"context":{"market":"DE","targetingKey":"c-2001"}}"#),
            None,
        ));
        assert_eq!(
            (by_attr["variant"].as_str(), by_attr["value"].as_f64()),
            (Some("reduced"), Some(25.0))
        );
        assert_eq!(by_attr["variant"], by_key["variant"]);
        assert_eq!(by_attr["metadata"]["version"], 1);
        // The flag's own metadata, beside the host's.
        assert_eq!(by_attr["metadata"]["policy_doc"], "PRC-7");
        assert_eq!(by_attr["metadata"]["reviewed_quarterly"], true);
        // A wrong-typed context.
        let typed = call(
            "POST",
            &one,
            Some(r#"{"context":{"market":"DE","customer_id":7}}"#),
            None,
        );
        let t = json(&typed);
        match mode {
            OfrepErrors::Spec => {
                assert_eq!(
                    (typed.status, t["errorCode"].as_str(), t.get("value")),
                    (400, Some("TYPE_MISMATCH"), None)
                );
                assert!(t["errorDetails"].as_str().unwrap().contains("customer_id"));
            }
            OfrepErrors::Fallback => {
                assert_eq!(
                    (typed.status, t["reason"].as_str(), t["value"].as_f64()),
                    (200, Some("ERROR"), Some(50.0))
                );
                assert_eq!(t["metadata"]["errorCode"], "TYPE_MISMATCH");
                assert_eq!(t.get("errorCode"), None);
            }
        }
        // Bulk: per-flag failures carry their errorCode; the flag set's metadata names the
        // version and the event stream is advertised.
        let bulk = json(&call(
            "POST",
            &format!("{base}/ofrep/v1/evaluate/flags"),
            Some(r#"{"context":{"market":"DE","customer_id":7}}"#),
            None,
        ));
        let entry = bulk["flags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == "FreeShippingThreshold")
            .unwrap()
            .clone();
        assert_eq!(
            (
                entry["metadata"]["ruleset"].as_str(),
                entry["metadata"].get("version")
            ),
            (Some("checkout"), None)
        );
        match mode {
            OfrepErrors::Spec => assert_eq!(entry["errorCode"], "TYPE_MISMATCH"),
            OfrepErrors::Fallback => assert_eq!(entry["reason"], "ERROR"),
        }
        assert_eq!(bulk["metadata"]["checkout.version"], 1);
        assert_eq!(bulk["eventStreams"][0]["type"], "sse");
        assert_eq!(
            bulk["eventStreams"][0]["endpoint"]["requestUri"],
            "/ofrep/v1/events"
        );
    }
}
