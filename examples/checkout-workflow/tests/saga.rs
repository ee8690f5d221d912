//! The checkout saga against a real broker (tansu, started here): no order mixes two versions
//! of FulfillmentRoutingMode across services while a new version is published mid-run, and
//! the mismatch metric counts exactly the disagreements the services saw.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

use flagforge_example_checkout_workflow::{run, table, Config};
use flagforge_testkit::Broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_orders_keep_their_decision_and_mismatches_are_counted() {
    let broker = Broker::start();
    let report = run(Config {
        brokers: Some(broker.addr.clone()),
        in_flight: 4,
        after: 4,
    })
    .await
    .unwrap();
    eprintln!("{}", table(&report));
    let (v1, v2) = report.versions;
    assert_eq!(report.rows.len(), 8);
    let mut expected_mismatches = 0;
    for r in &report.rows {
        // One decision end to end: the order service and fulfillment used what was decided.
        assert_eq!(r.order_fulfillment, r.decided_fulfillment, "{r:?}");
        assert_eq!(r.fulfillment, r.decided_fulfillment, "{r:?}");
        assert!(
            r.all_carried,
            "every downstream answer came from the context: {r:?}"
        );
        if r.in_flight {
            // Decided on v1, processed by services already holding v2.
            assert_eq!(r.decided_version, v1, "{r:?}");
            assert_eq!(r.fulfillment_local_version, v2, "{r:?}");
            // Pilot tenants moved NEW_PRIMARY → NEW_ONLY in v2: the order service and the
            // fulfillment consumer each see the difference once.
            if r.decided_fulfillment == "NEW_PRIMARY" {
                assert_eq!(r.mismatches, 2, "{r:?}");
                expected_mismatches += 2;
            } else {
                assert_eq!(r.mismatches, 0, "{r:?}");
            }
        } else {
            assert_eq!(r.decided_version, v2, "{r:?}");
            assert_eq!(r.mismatches, 0, "{r:?}");
        }
    }
    assert!(
        expected_mismatches > 0,
        "the run must include in-flight pilot orders"
    );
    assert!(
        report
            .rows
            .iter()
            .any(|r| !r.in_flight && r.decided_fulfillment == "NEW_ONLY"),
        "orders after the publish are decided on the new version"
    );
    assert_eq!(
        report
            .mismatches
            .get("FulfillmentRoutingMode")
            .copied()
            .unwrap_or(0),
        expected_mismatches
    );
    assert_eq!(report.mismatches.get("PromotionPolicyActivation"), None);
}
