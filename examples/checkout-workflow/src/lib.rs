//! The checkout saga, decided once per order.
//!
//! A **gateway** decides PromotionPolicyActivation, TaxCalculationMode and
//! FulfillmentRoutingMode once per order and signs them into a decision context. The
//! **pricing** and **order** services receive it over HTTP (header `flagforge-decision`); the
//! order service emits an `OrderPlaced` event to Kafka carrying the same bytes in a message
//! header; the **fulfillment** consumer routes by the carried FulfillmentRoutingMode. Every
//! service hosts its own copy of the checkout module, kept current from the modules topic.
//!
//! The run publishes a new FulfillmentRoutingMode version while the first orders are in flight
//! (decided, not yet priced or placed): those keep their decision end to end, and services
//! that now hold the new module count a decision mismatch; orders taken afterwards are decided
//! on the new version.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json as AxumJson;
use axum::Router;
use flagforge_decision::{
    attach_kafka, decide, now_ms, read_http, read_kafka, Lookup, Mismatches, Source, HEADER,
};
use flagforge_distribution::{KeyPair, TrustedKeys};
use flagforge_kafka::{KafkaConfig, Publisher, Registry, Subscriber, MODULES_TOPIC};
use flagforge_protocol::value::context_from_json;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value as Json};
use wasm_host::{Host, Limits};

/// The topic the order service emits `OrderPlaced` events to.
pub const EVENTS_TOPIC: &str = "checkout.order-events";
const RULESET: &str = "checkout";
const DECIDED: [&str; 3] = [
    "PromotionPolicyActivation",
    "TaxCalculationMode",
    "FulfillmentRoutingMode",
];

/// What one order went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderRow {
    /// Order id (the correlation id).
    pub order: String,
    /// Decided while the new version was being published (processed after it arrived).
    pub in_flight: bool,
    /// Module version the gateway decided with.
    pub decided_version: u64,
    /// FulfillmentRoutingMode as decided.
    pub decided_fulfillment: String,
    /// What pricing did (promotion, tax engine) and the module version it held.
    pub pricing: String,
    /// Module version the pricing service held.
    pub pricing_local_version: u64,
    /// FulfillmentRoutingMode the order service used.
    pub order_fulfillment: String,
    /// FulfillmentRoutingMode the fulfillment consumer routed by.
    pub fulfillment: String,
    /// Module version the fulfillment consumer held.
    pub fulfillment_local_version: u64,
    /// Decision mismatches counted for this order, across services.
    pub mismatches: u64,
    /// Whether every downstream answer came from the carried decision.
    pub all_carried: bool,
}

/// The run's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    /// One row per order, in order.
    pub rows: Vec<OrderRow>,
    /// Mismatches per flag, summed over the pricing, order and fulfillment services.
    pub mismatches: BTreeMap<String, u64>,
    /// Module versions published.
    pub versions: (u64, u64),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kafka brokers; `None` runs librdkafka's in-process mock cluster.
    pub brokers: Option<String>,
    /// Orders decided before the new version and processed after it (in flight).
    pub in_flight: usize,
    /// Orders taken after the new version is everywhere.
    pub after: usize,
}

/// The checkout module; with `next`, the FulfillmentRoutingMode pilot moves a step on
/// (NEW_PRIMARY → NEW_ONLY).
pub fn checkout_module(next: bool) -> Result<Vec<u8>> {
    let from = "      - when: 'tenant in segment(\"pilot_tenants\")'\n        serve: NEW_PRIMARY";
    let to = "      - when: 'tenant in segment(\"pilot_tenants\")'\n        serve: NEW_ONLY";
    let mut edited = false;
    let compiled =
        flagforge_compiler::compile_path_edited(&rules_examples::dir("checkout"), |path, text| {
            if next && path.ends_with("migration.yaml") && text.contains(from) {
                edited = true;
                return text.replacen(from, to, 1);
            }
            text
        })
        .map_err(|e| anyhow!("{e}"))?;
    if next && !edited {
        bail!("could not find the pilot rule in the checkout rules");
    }
    Ok(compiled.module)
}

/// A service's own copy of the module, kept current from Kafka.
struct Service {
    registry: Arc<Registry>,
    mismatches: Mismatches,
    _subscriber: Subscriber,
}

impl Service {
    fn start(kafka: &KafkaConfig, trusted: &TrustedKeys) -> Result<Arc<Service>> {
        let registry = Arc::new(Registry::new(
            Host::new(Limits::default())?,
            trusted.clone(),
            None,
        ));
        let subscriber = Subscriber::start(kafka, Arc::clone(&registry))?;
        Ok(Arc::new(Service {
            registry,
            mismatches: Mismatches::default(),
            _subscriber: subscriber,
        }))
    }

    fn version(&self) -> u64 {
        self.registry.get(RULESET).map_or(0, |s| s.version)
    }
}

type Rows = Arc<Mutex<BTreeMap<String, OrderRow>>>;

fn update(rows: &Rows, order: &str, f: impl FnOnce(&mut OrderRow)) {
    if let Ok(mut r) = rows.lock() {
        f(r.entry(order.to_owned()).or_default());
    }
}

/// Resolves the decided flags in a downstream service, counting this order's mismatches.
fn downstream(
    service: &Service,
    header: Option<&str>,
    trusted: &TrustedKeys,
    ctx: &flagforge_protocol::Context,
    flags: &[&str],
) -> Result<(BTreeMap<String, String>, u64, bool, u64)> {
    let served = service
        .registry
        .get(RULESET)
        .context("no module served yet")?;
    let here = Mismatches::default();
    let lookup = Lookup::new(&served.module, header, trusted, now_ms(), &here, true);
    if let Some(e) = lookup.rejection() {
        eprintln!("decision context rejected: {e}");
    }
    let mut out = BTreeMap::new();
    let mut all_carried = true;
    for flag in flags {
        let r = lookup.resolve(flag, ctx);
        all_carried &= r.source == Source::Carried;
        out.insert((*flag).to_owned(), r.resolution.variant.unwrap_or_default());
    }
    let mut n = 0;
    for (flag, count) in here.counts() {
        for _ in 0..count {
            service.mismatches.record(&flag);
        }
        n += count;
    }
    Ok((out, n, all_carried, served.version))
}

struct Shared {
    trusted: TrustedKeys,
    rows: Rows,
    pricing: Arc<Service>,
    orders: Arc<Service>,
    producer: FutureProducer,
}

fn order_context(body: &Json) -> Result<(String, flagforge_protocol::Context)> {
    let order = body["order"].as_str().context("no order id")?.to_owned();
    let ctx = context_from_json(&body["context"]).map_err(|e| anyhow!("{e}"))?;
    Ok((order, ctx))
}

fn bad(e: anyhow::Error) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{e:#}"))
}

async fn price(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    AxumJson(body): AxumJson<Json>,
) -> Result<AxumJson<Json>, (StatusCode, String)> {
    let (order, ctx) = order_context(&body).map_err(bad)?;
    let (v, mismatches, carried, local) = downstream(
        &s.pricing,
        read_http(&headers),
        &s.trusted,
        &ctx,
        &DECIDED[..2],
    )
    .map_err(bad)?;
    let pricing = format!(
        "promotion {} · tax {}",
        v["PromotionPolicyActivation"], v["TaxCalculationMode"]
    );
    update(&s.rows, &order, |r| {
        r.pricing = pricing.clone();
        r.pricing_local_version = local;
        r.mismatches += mismatches;
        r.all_carried &= carried;
    });
    Ok(AxumJson(json!({ "pricing": pricing })))
}

async fn place(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    AxumJson(body): AxumJson<Json>,
) -> Result<AxumJson<Json>, (StatusCode, String)> {
    let (order, ctx) = order_context(&body).map_err(bad)?;
    let header = read_http(&headers).map(str::to_owned);
    let (v, mismatches, carried, _) = downstream(
        &s.orders,
        header.as_deref(),
        &s.trusted,
        &ctx,
        &DECIDED[2..],
    )
    .map_err(bad)?;
    let mode = v["FulfillmentRoutingMode"].clone();
    update(&s.rows, &order, |r| {
        r.order_fulfillment = mode.clone();
        r.mismatches += mismatches;
        r.all_carried &= carried;
    });
    // OrderPlaced, carrying the same decision context in the message headers.
    let event =
        json!({ "type": "OrderPlaced", "order": order, "context": body["context"] }).to_string();
    let mut headers = OwnedHeaders::new();
    if let Some(h) = &header {
        headers = attach_kafka(headers, h);
    }
    s.producer
        .send(
            FutureRecord::to(EVENTS_TOPIC)
                .key(&order)
                .payload(&event)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| bad(anyhow!("producing OrderPlaced: {e}")))?;
    Ok(AxumJson(json!({ "placed": order, "fulfillment": mode })))
}

fn post_json(url: &str, header: &str, body: &Json) -> Result<Json> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header(HEADER, header)
        .header("content-type", "application/json")
        .send(body.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    if status != 200 {
        bail!("POST {url}: {status} {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

async fn serve(app: Router) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs the saga. Needs a multi-threaded tokio runtime.
pub async fn run(config: Config) -> Result<Report> {
    let mock = match &config.brokers {
        Some(_) => None,
        None => {
            let m = rdkafka::mocking::MockCluster::new(1).context("starting the mock cluster")?;
            m.create_topic(MODULES_TOPIC, 1, 1)?;
            m.create_topic(flagforge_kafka::AUDIT_TOPIC, 1, 1)?;
            m.create_topic(EVENTS_TOPIC, 1, 1)?;
            Some(m)
        }
    };
    let brokers = match (&mock, &config.brokers) {
        (Some(m), _) => m.bootstrap_servers(),
        (None, Some(b)) => b.clone(),
        (None, None) => bail!("no broker"),
    };
    let report = saga(&brokers, &config, mock.is_none()).await;
    drop(mock);
    report
}

async fn saga(brokers: &str, config: &Config, create_topics: bool) -> Result<Report> {
    let kafka = KafkaConfig::new(brokers);
    let publisher_key = KeyPair::generate()?;
    let module_keys = TrustedKeys::new([publisher_key.public()]);
    let gateway_key = KeyPair::generate()?;
    let decision_keys = TrustedKeys::new([gateway_key.public()]);
    let publisher = Publisher::new(kafka.clone())?;
    if create_topics {
        publisher.ensure_topic().await?;
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .create()?;
        admin
            .create_topics(
                &[rdkafka::admin::NewTopic::new(
                    EVENTS_TOPIC,
                    1,
                    rdkafka::admin::TopicReplication::Fixed(1),
                )],
                &rdkafka::admin::AdminOptions::new(),
            )
            .await?;
    }
    let stamp = "2026-11-25T10:00:00Z".to_owned();
    let (m1, m2) = (checkout_module(false)?, checkout_module(true)?);
    let v1 = publisher
        .publish(
            RULESET,
            m1,
            &publisher_key,
            stamp.clone(),
            Some("pilot on NEW_PRIMARY".into()),
            None,
        )
        .await?
        .version;

    let gateway = Service::start(&kafka, &module_keys)?;
    let pricing = Service::start(&kafka, &module_keys)?;
    let orders = Service::start(&kafka, &module_keys)?;
    let fulfillment = Service::start(&kafka, &module_keys)?;
    let all = [&gateway, &pricing, &orders, &fulfillment];
    wait_until("every service serves v1", || {
        all.iter().all(|s| s.version() >= v1)
    })
    .await?;

    let rows: Rows = Arc::default();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()?;
    let shared = Arc::new(Shared {
        trusted: decision_keys.clone(),
        rows: Arc::clone(&rows),
        pricing: Arc::clone(&pricing),
        orders: Arc::clone(&orders),
        producer,
    });
    let pricing_url = serve(
        Router::new()
            .route("/price", post(price))
            .with_state(Arc::clone(&shared)),
    )
    .await?;
    let order_url = serve(
        Router::new()
            .route("/orders", post(place))
            .with_state(Arc::clone(&shared)),
    )
    .await?;

    // The fulfillment consumer routes OrderPlaced events by the carried decision.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "fulfillment")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(EVENTS_TOPIC, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let (f_rows, f_service, f_keys) = (
        Arc::clone(&rows),
        Arc::clone(&fulfillment),
        decision_keys.clone(),
    );
    let consumer_task = tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let header = read_kafka(msg.headers());
            let Some(Ok(body)) = msg.payload().map(serde_json::from_slice::<Json>) else {
                continue;
            };
            let Ok((order, ctx)) = order_context(&body) else {
                continue;
            };
            if let Ok((v, mismatches, carried, local)) =
                downstream(&f_service, header.as_deref(), &f_keys, &ctx, &DECIDED[2..])
            {
                update(&f_rows, &order, |r| {
                    r.fulfillment = v["FulfillmentRoutingMode"].clone();
                    r.fulfillment_local_version = local;
                    r.mismatches += mismatches;
                    r.all_carried &= carried;
                });
            }
        }
    });

    // The gateway: decide once, then pricing and the order service over HTTP.
    let take_order = |i: usize, in_flight: bool| -> Result<(String, String, Json)> {
        let order = format!("order-{:03}", i + 1);
        let tenants = ["acme-fr", "globex-de", "shop-77"];
        let markets = ["FR", "DE", "FR"];
        let context = json!({
            "tenant": tenants[i % 3], "market": markets[i % 3], "customer_id": format!("c-{}", 1000 + i),
            "order_total": 120.5 + i as f64, "now": "2026-12-10T09:00:00Z",
        });
        let ctx = context_from_json(&context).map_err(|e| anyhow!("{e}"))?;
        let served = gateway
            .registry
            .get(RULESET)
            .context("gateway has no module")?;
        let d = decide(
            &served.module,
            Some(served.version),
            &DECIDED,
            &ctx,
            &order,
            now_ms(),
            600_000,
        )?;
        update(&rows, &order, |r| {
            r.order = order.clone();
            r.in_flight = in_flight;
            r.decided_version = served.version;
            r.decided_fulfillment = d.decisions["FulfillmentRoutingMode"]
                .variant
                .clone()
                .unwrap_or_default();
            r.all_carried = true;
        });
        Ok((
            order.clone(),
            d.encode(&gateway_key),
            json!({ "order": order, "context": context }),
        ))
    };
    let downstream_calls = |header: String, body: Json| {
        let (p, o) = (pricing_url.clone(), order_url.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            post_json(&format!("{p}/price"), &header, &body)?;
            post_json(&format!("{o}/orders"), &header, &body)?;
            Ok(())
        })
    };

    // Orders decided on v1, held (in flight) while v2 is published and reaches every service.
    let held: Vec<(String, String, Json)> = (0..config.in_flight)
        .map(|i| take_order(i, true))
        .collect::<Result<_>>()?;
    let v2 = publisher
        .publish(
            RULESET,
            m2,
            &publisher_key,
            stamp,
            Some("pilot moves to NEW_ONLY".into()),
            None,
        )
        .await?
        .version;
    wait_until("every service serves v2", || {
        all.iter().all(|s| s.version() >= v2)
    })
    .await?;
    let mut calls = Vec::new();
    for (_, header, body) in held {
        calls.push(downstream_calls(header, body));
    }
    // New orders, decided on v2.
    for i in config.in_flight..config.in_flight + config.after {
        let (_, header, body) = take_order(i, false)?;
        calls.push(downstream_calls(header, body));
    }
    for c in calls {
        c.await??;
    }
    let total = config.in_flight + config.after;
    wait_until("fulfillment routed every order", || {
        rows.lock()
            .map(|r| r.values().filter(|o| !o.fulfillment.is_empty()).count() == total)
            .unwrap_or(false)
    })
    .await?;
    consumer_task.abort();

    let mut mismatches: BTreeMap<String, u64> = BTreeMap::new();
    for s in [&pricing, &orders, &fulfillment] {
        for (flag, n) in s.mismatches.counts() {
            *mismatches.entry(flag).or_default() += n;
        }
    }
    let rows = rows
        .lock()
        .map_err(|_| anyhow!("rows lock"))?
        .values()
        .cloned()
        .collect();
    Ok(Report {
        rows,
        mismatches,
        versions: (v1, v2),
    })
}

/// The per-order table.
#[must_use]
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "{:<10} {:<10} {:>7} {:<38} {:<13} {:<13} {:>6} {:>10}\n",
        "order",
        "phase",
        "decided",
        "pricing path",
        "order svc",
        "fulfillment",
        "local",
        "mismatches"
    );
    for r in &report.rows {
        out.push_str(&format!(
            "{:<10} {:<10} {:>7} {:<38} {:<13} {:<13} {:>6} {:>10}\n",
            r.order,
            if r.in_flight { "in flight" } else { "after" },
            format!("v{}", r.decided_version),
            r.pricing,
            r.order_fulfillment,
            r.fulfillment,
            format!("v{}", r.fulfillment_local_version),
            r.mismatches
        ));
    }
    out.push_str(&format!(
        "\ndecision mismatches counted by the services (carried answer used): {:?}\n",
        report.mismatches
    ));
    out
}
