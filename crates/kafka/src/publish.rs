//! Publishing a module: create the compacted topic if missing, find the ruleset's latest
//! version on the topic, sign the next one and produce it keyed by ruleset.

use std::time::Duration;

use flagforge_distribution::{Draft, Envelope, KeyPair};
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
        Ok(Publisher { config, producer })
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
        if self.topic_exists()? {
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
        Ok(())
    }

    fn topic_exists(&self) -> Result<bool, KafkaError> {
        tokio::task::block_in_place(|| self.topic_exists_blocking())
    }

    fn topic_exists_blocking(&self) -> Result<bool, KafkaError> {
        let consumer: BaseConsumer = self
            .config
            .client(&[("group.id", "flagforge-publisher")])
            .create()?;
        let metadata = consumer.fetch_metadata(Some(MODULES_TOPIC), Duration::from_secs(10))?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.error().is_none() && !t.partitions().is_empty()))
    }

    /// The newest envelope on the topic for `ruleset` (by the hosts' ordering rule), read from
    /// the beginning of every partition to its end.
    pub fn latest(&self, ruleset: &str) -> Result<Option<Envelope>, KafkaError> {
        let consumer: BaseConsumer = self
            .config
            .client(&[
                ("group.id", "flagforge-publisher"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("max.partition.fetch.bytes", "2000000"),
            ])
            .create()?;
        let metadata = consumer.fetch_metadata(Some(MODULES_TOPIC), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(MODULES_TOPIC, p.id(), Offset::Beginning)?;
            }
        }
        let mut open = tpl.count();
        consumer.assign(&tpl)?;
        let mut best: Option<Envelope> = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while open > 0 {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::Client(
                    "timed out reading the modules topic".into(),
                ));
            }
            match consumer.poll(Duration::from_millis(500)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(msg)) => {
                    if msg.key() != Some(ruleset.as_bytes()) {
                        continue;
                    }
                    // Anything undecodable is a poison message; hosts reject it too.
                    let Some(env) = msg.payload().and_then(|p| Envelope::decode(p).ok()) else {
                        continue;
                    };
                    let keep = match &best {
                        None => true,
                        Some(b) => {
                            flagforge_distribution::decide(Some((b.version, &b.sha256)), &env)
                                == flagforge_distribution::Decision::Accept
                        }
                    };
                    if keep {
                        best = Some(env);
                    }
                }
            }
        }
        Ok(best)
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
