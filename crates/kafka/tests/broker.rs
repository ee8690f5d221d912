//! Against a real Kafka-protocol broker (tansu, started by this test on a free loopback port):
//! publish → the subscribed registry serves it → publish a new version → hot swap; poison
//! messages are rejected and counted while the last good module keeps serving; with the
//! broker gone, a fresh registry serves from the snapshot directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagforge_distribution::{Draft, Envelope, KeyPair, SnapshotDir, TrustedKeys};
use flagforge_kafka::{KafkaConfig, Publisher, Registry, Source, Subscriber, MODULES_TOPIC};
use flagforge_protocol::{Context, Value};
use flagforge_testkit::{checkout_module, Broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use wasm_host::{Host, Limits};

fn fraud_engine_in_france(registry: &Registry) -> String {
    let served = registry.get("checkout").unwrap();
    let mut ctx = Context::new();
    ctx.insert("market".into(), Value::from("FR"));
    served
        .module
        .evaluate("FraudEngineRoutingMode", &ctx, false)
        .variant
        .unwrap()
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_propagate_swap_reject_poison_and_restart_from_snapshot() {
    let broker = Broker::start();
    let config = KafkaConfig::new(broker.addr.clone());
    let key = KeyPair::generate().unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let v1 = checkout_module(false);
    let v2 = checkout_module(true);
    let now = || "2026-11-25T10:00:00Z".to_owned();

    let publisher = Publisher::new(config.clone()).unwrap();
    let p1 = publisher
        .publish(
            "checkout",
            v1.clone(),
            &key,
            now(),
            Some("launch".into()),
            None,
        )
        .await
        .unwrap();
    assert_eq!((p1.version, p1.unchanged), (1, false));

    let snapshots = tempfile::tempdir().unwrap();
    let registry = Arc::new(Registry::new(
        Host::new(Limits::default()).unwrap(),
        trusted.clone(),
        Some(SnapshotDir::open(snapshots.path()).unwrap()),
    ));
    let subscriber = Subscriber::start(&config, Arc::clone(&registry)).unwrap();
    wait_until("v1 is served", || {
        registry.get("checkout").is_some_and(|s| s.version == 1)
    })
    .await;
    assert_eq!(registry.get("checkout").unwrap().source, Source::Kafka);
    assert_eq!(fraud_engine_in_france(&registry), "engine_v3");

    // A new version is picked up and swapped in without a restart.
    let p2 = publisher
        .publish(
            "checkout",
            v2.clone(),
            &key,
            now(),
            Some("kill v3 in FR".into()),
            Some("INC-7".into()),
        )
        .await
        .unwrap();
    assert_eq!(p2.version, 2);
    wait_until("v2 is served", || {
        registry.get("checkout").is_some_and(|s| s.version == 2)
    })
    .await;
    assert_eq!(fraud_engine_in_france(&registry), "engine_v2");

    // Publishing the same module again is a no-op.
    let again = publisher
        .publish("checkout", v2.clone(), &key, now(), None, None)
        .await
        .unwrap();
    assert_eq!((again.version, again.unchanged), (2, true));

    // An oversized envelope is refused before producing, with the limit in the message.
    let err = publisher
        .publish("checkout", vec![0u8; 1024 * 1024], &key, now(), None, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the limit is 921600 bytes"),
        "{err}"
    );

    // Poison: garbage, an untrusted signer, a tampered module, an older version.
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let draft = |version: u64, module: &[u8]| Draft {
        ruleset: "checkout".into(),
        version,
        module: module.to_vec(),
        created_at: now(),
        reason: None,
        change: None,
    };
    let stranger = KeyPair::generate().unwrap();
    let mut tampered = Envelope::sign(draft(3, &v1), &key);
    tampered.module[100] ^= 0xff;
    let poison = vec![
        b"definitely not an envelope".to_vec(),
        Envelope::sign(draft(3, &v1), &stranger).encode(),
        tampered.encode(),
        Envelope::sign(draft(1, &v1), &key).encode(),
    ];
    for bytes in &poison {
        raw.send(
            FutureRecord::to(MODULES_TOPIC)
                .key("checkout")
                .payload(bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    wait_until("every poison message is counted", || {
        let r = registry.rejected();
        ["garbage", "unknown_key", "hash_mismatch", "stale"]
            .iter()
            .all(|k| r.get(*k).copied().unwrap_or(0) >= 1)
    })
    .await;
    let served = registry.get("checkout").unwrap();
    assert_eq!(served.version, 2, "the last good version keeps serving");
    assert_eq!(fraud_engine_in_france(&registry), "engine_v2");

    // The broker goes away; a fresh host serves from the snapshot directory.
    drop(subscriber);
    drop(broker);
    let restarted = Registry::new(
        Host::new(Limits::default()).unwrap(),
        trusted,
        Some(SnapshotDir::open(snapshots.path()).unwrap()),
    );
    assert!(restarted.load_snapshots().unwrap().is_empty());
    let from_snapshot = restarted.get("checkout").unwrap();
    assert_eq!(
        (from_snapshot.version, from_snapshot.source),
        (2, Source::Snapshot)
    );
    assert_eq!(fraud_engine_in_france(&restarted), "engine_v2");
}
