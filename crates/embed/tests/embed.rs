//! The embedded host and its OpenFeature provider, driven through the real `open-feature`
//! crate: the checkout cases give the golden answers (`corpus/golden/checkout.json`), a
//! client setting only `targetingKey` gets the buckets of one setting `customer_id`; with a
//! real broker (tansu), a new version is announced with exactly the flags that changed and a
//! host that loses its broker turns stale.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed assumption is a failed test"
)]

use std::time::{Duration, Instant};

use flagforge_embed::{Event, FlagforgeProvider, Flags, Status};
use flagforge_protocol::{ErrorCode, Resolution, ValueType};
use flagforge_testkit::{checkout_module, seeded_snapshot};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationErrorCode, EvaluationReason,
    FlagMetadataValue, OpenFeature, StructValue,
};
use serde_json::Value as Json;

struct Case {
    name: String,
    flag: String,
    context: serde_json::Map<String, Json>,
    golden: Resolution,
}

fn golden_cases() -> Vec<Case> {
    let path = rules_examples::corpus().join("golden/checkout.json");
    let golden: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["flag"].is_string())
        .map(|c| {
            let bytes: Vec<u8> = (0..c["result"].as_str().unwrap().len() / 2)
                .map(|i| {
                    u8::from_str_radix(&c["result"].as_str().unwrap()[2 * i..2 * i + 2], 16)
                        .unwrap()
                })
                .collect();
            Case {
                name: c["name"].as_str().unwrap().to_owned(),
                flag: c["flag"].as_str().unwrap().to_owned(),
                context: c["context"].as_object().unwrap().clone(),
                golden: flagforge_protocol::decode(&bytes).unwrap(),
            }
        })
        .collect()
}

fn of_context(json: &serde_json::Map<String, Json>, targeting: Option<&str>) -> EvaluationContext {
    let mut ctx = EvaluationContext::default();
    if let Some(t) = targeting {
        ctx = ctx.with_targeting_key(t);
    }
    for (k, v) in json {
        let field = match v {
            Json::Bool(b) => EvaluationContextFieldValue::Bool(*b),
            Json::String(s) => EvaluationContextFieldValue::String(s.clone()),
            Json::Number(n) if n.is_i64() => EvaluationContextFieldValue::Int(n.as_i64().unwrap()),
            Json::Number(n) => EvaluationContextFieldValue::Float(n.as_f64().unwrap()),
            other => EvaluationContextFieldValue::new_struct(other.clone()),
        };
        ctx = ctx.with_custom_field(k.clone(), field);
    }
    ctx
}

/// What the SDK returned, reduced to (value as JSON, variant, reason, error code).
type Answer = (Json, Option<String>, Option<String>, Option<String>);

fn reason_name(r: Option<EvaluationReason>) -> Option<String> {
    r.map(|r| r.to_string())
}

fn code_name(c: &EvaluationErrorCode) -> String {
    match c {
        EvaluationErrorCode::General(_) => "GENERAL".into(),
        other => other.to_string(),
    }
}

fn struct_json(s: &StructValue) -> Json {
    fn value(v: &open_feature::Value) -> Json {
        match v {
            open_feature::Value::Bool(b) => Json::Bool(*b),
            open_feature::Value::Int(i) => Json::from(*i),
            open_feature::Value::Float(f) => Json::from(*f),
            open_feature::Value::String(s) => Json::String(s.clone()),
            open_feature::Value::Array(a) => Json::Array(a.iter().map(value).collect()),
            open_feature::Value::Struct(s) => struct_json(s),
        }
    }
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}

async fn ask(
    client: &open_feature::Client,
    flag: &str,
    ty: ValueType,
    ctx: &EvaluationContext,
) -> Answer {
    macro_rules! details {
        ($call:expr, $to_json:expr) => {
            match $call.await {
                Ok(d) => ($to_json(d.value), d.variant, reason_name(d.reason), None),
                Err(e) => (
                    Json::Null,
                    None,
                    Some("ERROR".into()),
                    Some(code_name(&e.code)),
                ),
            }
        };
    }
    match ty {
        ValueType::Boolean => details!(client.get_bool_details(flag, Some(ctx), None), Json::Bool),
        ValueType::String => details!(
            client.get_string_details(flag, Some(ctx), None),
            Json::String
        ),
        ValueType::Integer => details!(client.get_int_details(flag, Some(ctx), None), Json::from),
        ValueType::Float => details!(client.get_float_details(flag, Some(ctx), None), |f: f64| {
            Json::from(f)
        }),
        ValueType::Object => details!(
            client.get_struct_details::<StructValue>(flag, Some(ctx), None),
            |s: StructValue| struct_json(&s)
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openfeature_client_gives_the_golden_answers_and_targeting_key_buckets_alike() {
    let seeded = seeded_snapshot("checkout", checkout_module(false));
    // Without the clock: the golden cases that leave out `now` read it as missing.
    let flags = Flags::builder()
        .snapshot_dir(&seeded.snapshots)
        .trusted_key_file(&seeded.key_file)
        .ruleset("checkout")
        .without_clock()
        .start()
        .unwrap();
    assert_eq!(flags.status(), Status::Ready);
    let types: std::collections::HashMap<String, ValueType> = [
        "FreeShippingThreshold",
        "CheckoutExperienceVariant",
        "PremiumEntitlementRule",
        "SameDayDispatchEligibility",
        "FulfillmentRoutingMode",
        "LegacyOrderWriteMode",
        "FraudEngineRoutingMode",
        "PromotionPolicyActivation",
        "TaxCalculationMode",
    ]
    .iter()
    .map(|k| {
        let d = flags.details(k, &Default::default()).unwrap();
        ((*k).to_owned(), d.value_type)
    })
    .collect();
    assert_eq!(types["FreeShippingThreshold"], ValueType::Float);
    assert_eq!(types["PremiumEntitlementRule"], ValueType::Object);
    assert_eq!(types["SameDayDispatchEligibility"], ValueType::Boolean);

    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider("golden", FlagforgeProvider::new(flags.clone()))
        .await;
    let client = api.create_named_client("golden");
    drop(api);

    let cases = golden_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let (mut checked, mut by_key) = (0, 0);
    for case in &cases {
        // A flag no ruleset defines is asked for as a boolean.
        let ty = types.get(&case.flag).copied().unwrap_or(ValueType::Boolean);
        let got = ask(&client, &case.flag, ty, &of_context(&case.context, None)).await;
        let g = &case.golden;
        let want: Answer = match g.error_code {
            Some(code) => (
                Json::Null,
                None,
                Some("ERROR".into()),
                Some(code.as_str().to_owned()),
            ),
            None => (
                g.value.to_json_as(ty == ValueType::Float),
                g.variant.clone(),
                Some(g.reason.as_str().to_owned()),
                None,
            ),
        };
        assert_eq!(got, want, "{}", case.name);
        checked += 1;
        // The same case with the subject only in `targetingKey`.
        if let Some(Json::String(id)) = case.context.get("customer_id") {
            let mut without = case.context.clone();
            without.remove("customer_id");
            let again = ask(&client, &case.flag, ty, &of_context(&without, Some(id))).await;
            assert_eq!(again, got, "{} (targetingKey only)", case.name);
            by_key += 1;
        }
    }
    assert!(by_key >= 10, "{by_key} cases with a customer_id");
    eprintln!("{checked} golden cases, {by_key} also by targetingKey alone");

    // Metadata names the ruleset, version and module hash.
    let d = client
        .get_string_details(
            "CheckoutExperienceVariant",
            Some(&EvaluationContext::default().with_targeting_key("c-1001")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(d.value, "one-page");
    let meta = d.flag_metadata.values;
    assert_eq!(
        meta["ruleset"],
        FlagMetadataValue::String("checkout".into())
    );
    assert_eq!(meta["version"], FlagMetadataValue::Int(1));
    assert_eq!(
        meta["sha256"],
        FlagMetadataValue::String(flags.served()[0].2.clone())
    );
    // A flag's own metadata (`metadata:` in its rule file) comes with it.
    let d = client
        .get_float_details("FreeShippingThreshold", None, None)
        .await
        .unwrap();
    assert_eq!(
        d.flag_metadata.values["policy_doc"],
        FlagMetadataValue::String("PRC-7".into())
    );
    assert_eq!(
        d.flag_metadata.values["reviewed_quarterly"],
        FlagMetadataValue::Bool(true)
    );
    assert_eq!(
        d.flag_metadata.values["ruleset"],
        FlagMetadataValue::String("checkout".into())
    );
    // The wrong getter is the SDK's TYPE_MISMATCH path; an unknown flag FLAG_NOT_FOUND.
    let wrong = client
        .get_bool_value("CheckoutExperienceVariant", None, None)
        .await;
    assert_eq!(wrong.unwrap_err().code, EvaluationErrorCode::TypeMismatch);
    let missing = client.get_bool_value("NoSuchFlag", None, None).await;
    assert_eq!(missing.unwrap_err().code, EvaluationErrorCode::FlagNotFound);
    // A wrong-typed context: TYPE_MISMATCH from the module, the SDK's error path.
    let typed = client
        .get_float_value(
            "FreeShippingThreshold",
            Some(
                &EvaluationContext::default()
                    .with_custom_field("market", "FR")
                    .with_custom_field("customer_id", 7),
            ),
            None,
        )
        .await;
    assert_eq!(typed.unwrap_err().code, EvaluationErrorCode::TypeMismatch);
}

#[test]
fn the_facade_getters_answer_with_the_module_and_fall_back_to_the_callers_default() {
    let seeded = seeded_snapshot("checkout", checkout_module(false));
    let flags = Flags::builder()
        .snapshot_dir(&seeded.snapshots)
        .trusted_key_file(&seeded.key_file)
        .start()
        .unwrap();
    let ctx = flagforge_embed::context!({ "targetingKey": "c-1001", "market": "FR", "tier": "gold", "app_version": "2.1.0" });
    assert_eq!(flags.number("FreeShippingThreshold", &ctx, -1.0), 25.0);
    assert_eq!(
        flags.integer("FreeShippingThreshold", &ctx, -1),
        -1,
        "a float flag is no integer"
    );
    assert_eq!(
        flags.string("FulfillmentRoutingMode", &ctx, "LEGACY_ONLY"),
        "DUAL_WRITE"
    );
    assert!(
        !flags.boolean("CheckoutExperienceVariant", &ctx, false),
        "wrong type: the default"
    );
    assert_eq!(
        flags.object("PremiumEntitlementRule", &ctx, Json::Null)["support"],
        "chat"
    );
    let bad = flagforge_embed::context!({ "customer_id": 7, "market": "FR" });
    assert_eq!(flags.number("FreeShippingThreshold", &bad, -1.0), -1.0);
    let d = flags.details("FreeShippingThreshold", &bad).unwrap();
    assert_eq!(d.error_code(), Some(ErrorCode::TypeMismatch));
    assert_eq!(
        d.to_json()["value"],
        serde_json::json!(50.0),
        "the on_error value, a float"
    );
    // The clock: `now` is supplied (the winter promotion started 2026-11-20).
    let promo = flagforge_embed::context!({ "market": "FR" });
    assert!(flags.boolean("PromotionPolicyActivation", &promo, false));
}

#[test]
fn a_refused_snapshot_is_an_error_status_and_a_missing_one_not_ready() {
    let seeded = seeded_snapshot("checkout", checkout_module(false));
    let stranger = flagforge_distribution::KeyPair::generate().unwrap();
    let refused = Flags::builder()
        .snapshot_dir(&seeded.snapshots)
        .trusted_key(stranger.public())
        .start()
        .unwrap();
    assert_eq!(refused.status(), Status::Error);
    let empty = tempfile::tempdir().unwrap();
    let waiting = Flags::builder()
        .snapshot_dir(empty.path())
        .trusted_key_file(&seeded.key_file)
        .start()
        .unwrap();
    assert_eq!(waiting.status(), Status::NotReady);
    assert!(matches!(
        waiting.details("FreeShippingThreshold", &Default::default()),
        Err(flagforge_embed::EmbedError::NotReady)
    ));
    // A sidecar writes the snapshot later: `reload` serves it and announces it.
    let mut events = waiting.events();
    std::fs::copy(
        seeded.snapshots.join("checkout.envelope"),
        empty.path().join("checkout.envelope"),
    )
    .unwrap();
    waiting.reload().unwrap();
    assert_eq!(waiting.status(), Status::Ready);
    let changed = next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::ConfigurationChanged { .. })
    });
    assert!(matches!(
        changed,
        Event::ConfigurationChanged { version: 1, .. }
    ));
    next_event(&mut events, Duration::from_secs(5), |e| *e == Event::Ready);
}

fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    within: Duration,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + within;
    loop {
        match events.try_recv() {
            Ok(e) if want(&e) => return e,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "no matching event within {within:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn kafka_updates_announce_exactly_the_changed_flags_and_a_lost_broker_turns_stale() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut broker = flagforge_testkit::Broker::start();
    let kafka = flagforge_kafka::KafkaConfig::new(broker.addr.clone());
    let key = flagforge_distribution::KeyPair::generate().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let flags = Flags::builder()
        .snapshot_dir(snapshots.path())
        .trusted_key(key.public())
        .ruleset("checkout")
        .kafka(broker.addr.clone())
        .start()
        .unwrap();
    let mut events = flags.events();
    assert_eq!(flags.status(), Status::NotReady);
    let publisher = flagforge_kafka::Publisher::new(kafka).unwrap();
    let at = || "2026-11-29T10:00:00Z".to_owned();
    rt.block_on(publisher.publish("checkout", checkout_module(false), &key, at(), None, None))
        .unwrap();
    let first = next_event(&mut events, Duration::from_secs(20), |e| {
        matches!(e, Event::ConfigurationChanged { .. })
    });
    let Event::ConfigurationChanged {
        version,
        flags_changed,
        ..
    } = first
    else {
        unreachable!()
    };
    assert_eq!(version, 1);
    assert_eq!(flags_changed.len(), 9, "a first version changes every flag");
    next_event(&mut events, Duration::from_secs(5), |e| *e == Event::Ready);
    let fr = flagforge_embed::context!({ "market": "FR" });
    assert_eq!(flags.string("FraudEngineRoutingMode", &fr, "?"), "v3");

    // The kill switch: only FraudEngineRoutingMode's rules change.
    rt.block_on(publisher.publish("checkout", checkout_module(true), &key, at(), None, None))
        .unwrap();
    let second = next_event(&mut events, Duration::from_secs(20), |e| {
        matches!(e, Event::ConfigurationChanged { .. })
    });
    assert_eq!(
        second,
        Event::ConfigurationChanged {
            ruleset: "checkout".into(),
            version: 2,
            sha256: flags.served()[0].2.clone(),
            flags_changed: vec!["FraudEngineRoutingMode".into()],
        }
    );
    assert_eq!(flags.string("FraudEngineRoutingMode", &fr, "?"), "v2");

    // The broker goes away: the ops flag allows 1 s without contact.
    broker.stop();
    next_event(&mut events, Duration::from_secs(10), |e| *e == Event::Stale);
    assert_eq!(flags.status(), Status::Stale);
    assert_eq!(
        flags.string("FraudEngineRoutingMode", &fr, "?"),
        "v2",
        "the last good version serves"
    );
}
