//! Publishing a module: create the compacted topic if missing, find the ruleset's latest
//! version on the topic, sign the next one and produce it keyed by ruleset.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flagforge_distribution::{decide, Decision, Draft, Envelope, KeyPair};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError, MAX_ENVELOPE_BYTES, MODULES_TOPIC};

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Ruleset name.
    pub ruleset: String,
    /// Version now on the topic for this module.
    pub version: u64,
    /// Module sha256.
    pub sha256: String,
    /// True when the topic already held this exact module (nothing was produced).
    pub unchanged: bool,
}

/// Publishes envelopes to the modules topic.
pub struct Publisher {
    config: KafkaConfig,
    producer: FutureProducer,
    topic_ready: AtomicBool,
    view: Mutex<TopicView>,
}

fn poisoned() -> KafkaError {
    KafkaError::Client("the publisher's topic view lock is poisoned".into())
}

/// The partitions of the modules topic, or `None` if it does not exist (yet).
fn partitions(consumer: &BaseConsumer) -> Result<Option<Vec<i32>>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(MODULES_TOPIC), Duration::from_secs(10))?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((!ids.is_empty()).then_some(ids))
}

/// What the publisher has read of the modules topic: the newest envelope per ruleset and how
/// far each partition has been read. One long-lived consumer, so a publish costs a watermark
/// round trip and the new records, not a fresh client and a full re-read.
#[derive(Default)]
struct TopicView {
    consumer: Option<BaseConsumer>,
    /// Next offset to read, per assigned partition.
    next: BTreeMap<i32, i64>,
    /// The topic's partitions and when they were last listed (refreshed every 30 s: the modules
    /// topic almost never changes shape, and a metadata round trip per publish adds latency).
    listed: Option<(Instant, Vec<i32>)>,
    best: HashMap<String, Envelope>,
}

impl TopicView {
    fn consumer(&mut self, config: &KafkaConfig) -> Result<&BaseConsumer, KafkaError> {
        if self.consumer.is_none() {
            self.consumer = Some(
                config
                    .client(&[
                        ("group.id", "flagforge-publisher"),
                        ("enable.auto.commit", "false"),
                        ("auto.offset.reset", "earliest"),
                        ("fetch.wait.max.ms", "10"),
                        ("max.partition.fetch.bytes", "2000000"),
                    ])
                    .create()?,
            );
        }
        self.consumer
            .as_ref()
            .ok_or_else(|| KafkaError::Client("no consumer".into()))
    }

    fn catch_up(&mut self, config: &KafkaConfig) -> Result<(), KafkaError> {
        self.consumer(config)?;
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        // Where the log ends now; retried for a while, as right after a broker restart the
        // first requests fail while librdkafka reconnects.
        let listed = self
            .listed
            .take()
            .filter(|(at, ids)| !ids.is_empty() && at.elapsed() < Duration::from_secs(30));
        let ends = |consumer: &BaseConsumer| -> Result<(Vec<i32>, BTreeMap<i32, i64>), KafkaError> {
            let ids = match &listed {
                Some((_, ids)) => ids.clone(),
                None => partitions(consumer)?.unwrap_or_default(),
            };
            let mut high = BTreeMap::new();
            for &p in &ids {
                let (_, h) =
                    consumer.fetch_watermarks(MODULES_TOPIC, p, Duration::from_secs(10))?;
                high.insert(p, h);
            }
            Ok((ids, high))
        };
        let retry_until = Instant::now() + Duration::from_secs(10);
        let (ids, high) = loop {
            match ends(consumer) {
                Ok(r) => break r,
                Err(e) if Instant::now() > retry_until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let listed_at = listed.map_or_else(Instant::now, |(at, _)| at);
        self.listed = Some((listed_at, ids.clone()));
        // The log went backwards (a broker that lost its data): start over.
        if self
            .next
            .iter()
            .any(|(p, n)| high.get(p).is_some_and(|h| h < n))
        {
            *self = TopicView::default();
            return self.catch_up(config);
        }
        if ids.iter().any(|p| !self.next.contains_key(p)) {
            let mut tpl = TopicPartitionList::new();
            for &p in &ids {
                let at = self
                    .next
                    .get(&p)
                    .map_or(Offset::Beginning, |n| Offset::Offset(*n));
                tpl.add_partition_offset(MODULES_TOPIC, p, at)?;
                self.next.entry(p).or_insert(0);
            }
            consumer.assign(&tpl)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error = None;
        loop {
            let behind = ids.iter().any(|p| self.next[p] < high[p]);
            if !behind {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(KafkaError::Client(match last_error {
                    Some(e) => format!("timed out reading the modules topic: {e}"),
                    None => "timed out reading the modules topic".into(),
                }));
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(msg)) => {
                    self.next.insert(msg.partition(), msg.offset() + 1);
                    // Anything undecodable is a poison message; hosts reject it too.
                    let Some(env) = msg.payload().and_then(|p| Envelope::decode(p).ok()) else {
                        continue;
                    };
                    if msg.key() != Some(env.ruleset.as_bytes()) {
                        continue;
                    }
                    let current = self
                        .best
                        .get(&env.ruleset)
                        .map(|b| (b.version, b.sha256.as_str()));
                    if decide(current, &env) == Decision::Accept {
                        self.best.insert(env.ruleset.clone(), env);
                    }
                }
                // Transport errors are reported here while librdkafka reconnects by itself
                // (e.g. the broker restarted): keep reading until the deadline.
                Some(Err(e)) => last_error = Some(e),
                None => {
                    // Compaction leaves gaps in offsets: trust the fetch position too.
                    if let Ok(pos) = consumer.position() {
                        for e in pos.elements() {
                            if let (Offset::Offset(n), Some(next)) =
                                (e.offset(), self.next.get_mut(&e.partition()))
                            {
                                *next = (*next).max(n);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Publisher {
    /// Connects a producer (idempotent, acks=all).
    pub fn new(config: KafkaConfig) -> Result<Publisher, KafkaError> {
        // One record per request: publishing is rare, and some Kafka-protocol brokers (tansu's
        // memory engine) report wrong high watermarks after multi-record batches, which
        // stalls consumers that are already caught up.
        let producer = config
            .client(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "0"),
                ("batch.num.messages", "1"),
            ])
            .create()?;
        Ok(Publisher {
            config,
            producer,
            topic_ready: AtomicBool::new(false),
            view: Mutex::new(TopicView::default()),
        })
    }

    async fn produce(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), KafkaError> {
        let version = envelope.version.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ruleset",
                value: Some(&envelope.ruleset),
            })
            .insert(Header {
                key: "version",
                value: Some(&version),
            })
            .insert(Header {
                key: "sha256",
                value: Some(&envelope.sha256),
            });
        let record = FutureRecord::to(MODULES_TOPIC)
            .key(&envelope.ruleset)
            .payload(bytes)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| KafkaError::from(e))?;
        Ok(())
    }

    /// Creates the compacted modules topic if it does not exist.
    pub async fn ensure_topic(&self) -> Result<(), KafkaError> {
        if self.topic_ready.load(Ordering::Relaxed) || self.topic_exists()? {
            self.topic_ready.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.config.client(&[]).create()?;
        let topic = NewTopic::new(MODULES_TOPIC, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact");
        let results = admin
            .create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(KafkaError::Client(format!("creating topic `{t}`: {code}")))
                }
            }
        }
        self.topic_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn topic_exists(&self) -> Result<bool, KafkaError> {
        tokio::task::block_in_place(|| {
            let mut view = self.view.lock().map_err(|_| poisoned())?;
            let consumer = view.consumer(&self.config)?;
            Ok(partitions(consumer)?.is_some())
        })
    }

    /// The newest envelope on the topic for `ruleset` (by the hosts' ordering rule). The first
    /// call reads every partition from the beginning; later calls read only what was appended
    /// since, up to the high watermark fetched now.
    pub fn latest(&self, ruleset: &str) -> Result<Option<Envelope>, KafkaError> {
        let mut view = self.view.lock().map_err(|_| poisoned())?;
        view.catch_up(&self.config)?;
        Ok(view.best.get(ruleset).cloned())
    }

    /// (Needs a multi-threaded tokio runtime: the topic is read with blocking calls.)
    ///
    /// Signs and produces `module` for `ruleset` as the next version, unless the topic already
    /// holds this exact module. Refuses envelopes above [`MAX_ENVELOPE_BYTES`] before producing.
    /// The caller validates the module first (`flagforge publish` loads it in wasmtime): hosts
    /// refuse modules that do not load, and a refused module must never become the newest
    /// version on the topic.
    pub async fn publish(
        &self,
        ruleset: &str,
        module: Vec<u8>,
        key: &KeyPair,
        created_at: String,
        reason: Option<String>,
        change: Option<String>,
    ) -> Result<Published, KafkaError> {
        self.ensure_topic().await?;
        // Reading the topic blocks; keep it off the async workers.
        let latest = tokio::task::block_in_place(|| self.latest(ruleset))?;
        let draft = Draft {
            ruleset: ruleset.to_owned(),
            version: latest.as_ref().map_or(1, |e| e.version + 1),
            module,
            created_at,
            reason,
            change,
        };
        let envelope = Envelope::sign(draft, key);
        if let Some(l) = &latest {
            if l.sha256 == envelope.sha256 {
                return Ok(Published {
                    ruleset: ruleset.to_owned(),
                    version: l.version,
                    sha256: l.sha256.clone(),
                    unchanged: true,
                });
            }
        }
        let bytes = envelope.encode();
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(KafkaError::Refused(format!(
                "envelope is {} bytes; the limit is {MAX_ENVELOPE_BYTES} bytes",
                bytes.len()
            )));
        }
        self.produce(&envelope, &bytes).await?;
        // Two publishers may have picked the same version; the later record wins on every host
        // (flagforge-distribution's ordering rule). Read back: if a later record took this
        // version, say so. (If it lands after this read, this publish still reports success:
        // without compare-and-set on the topic no publisher can know. Hosts agree either way.)
        if let Some(winner) = tokio::task::block_in_place(|| self.latest(ruleset))? {
            if winner.version == envelope.version && winner.sha256 != envelope.sha256 {
                return Err(KafkaError::Refused(format!(
                    "lost a race: another publisher released version {} of `{ruleset}` (sha256 {}) right after this one, and hosts serve that; rebuild on top of it and publish again",
                    winner.version, winner.sha256
                )));
            }
        }
        Ok(Published {
            ruleset: ruleset.to_owned(),
            version: envelope.version,
            sha256: envelope.sha256,
            unchanged: false,
        })
    }
}

/// Every decodable envelope still on the modules topic (compaction keeps at least the newest
/// per ruleset), oldest first: what `flagforge replay` searches for a recorded module hash.
pub fn history(config: &KafkaConfig) -> Result<Vec<Envelope>, KafkaError> {
    let consumer: BaseConsumer = config
        .client(&[
            ("group.id", "flagforge-history"),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "10"),
            ("max.partition.fetch.bytes", "2000000"),
        ])
        .create()?;
    let ids = partitions(&consumer)?.unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for &p in &ids {
        let (low, h) = consumer.fetch_watermarks(MODULES_TOPIC, p, Duration::from_secs(10))?;
        if h > low {
            high.insert(p, h);
            tpl.add_partition_offset(MODULES_TOPIC, p, Offset::Beginning)?;
        }
    }
    if high.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !high.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::Client(
                "timed out reading the modules topic".into(),
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                if let Some(env) = msg.payload().and_then(|p| Envelope::decode(p).ok()) {
                    out.push(env);
                }
                if high
                    .get(&msg.partition())
                    .is_some_and(|h| msg.offset() + 1 >= *h)
                {
                    high.remove(&msg.partition());
                }
            }
            Some(Err(_)) | None => {
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let Offset::Offset(n) = e.offset() {
                            if high.get(&e.partition()).is_some_and(|h| n >= *h) {
                                high.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}
