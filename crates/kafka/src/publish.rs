//! Publishing a module: the IO around `flagforge_governance::release`. Create the topics if
//! missing, feed every modules record to the ledger (which keeps only verified ones), read the
//! verified audit records, let `release::plan` decide, sign and seal, then write the audit
//! record and the envelope keyed by ruleset.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flagforge_distribution::{Envelope, KeyPair, Position, TrustedKeys};
use flagforge_governance::audit::{link, without_module, AuditRecord, AUDIT_FORMAT};
use flagforge_governance::release::{
    plan, seal, verified_audit, History, Ledger, Plan, ReleaseError, Request,
};
use flagforge_governance::{decode_changes, Approval, Change, Trust};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use crate::{KafkaConfig, KafkaError, AUDIT_TOPIC, MAX_ENVELOPE_BYTES, MODULES_TOPIC};

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Ruleset name.
    pub ruleset: String,
    /// Version now on the topic for this module.
    pub version: u64,
    /// Its numbering epoch.
    pub epoch: u64,
    /// True when no verified earlier version was on the topic, so this release started a new
    /// epoch (a first publish, or a broker that lost its data).
    pub new_epoch: bool,
    /// The newest version of this ruleset on the topic signed by a key this publisher does
    /// not trust (hosts that trust that key serve it, and would refuse this release).
    pub untrusted_newer: Option<(String, Position)>,
    /// Records on the modules topic that did not verify, by reason (ignored).
    pub ignored: BTreeMap<String, u64>,
    /// Module sha256.
    pub sha256: String,
    /// True when the topic already held this exact module (nothing was produced).
    pub unchanged: bool,
    /// True when this completed a publish interrupted after its audit record was written.
    pub recovered: bool,
    /// The semantic diff from the version it replaces (empty when unchanged).
    pub changes: Vec<Change>,
    /// Where the module record landed, when this call produced one.
    pub record: Option<Landed>,
}

/// Where a produced module record landed, and how far the publisher read back after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    /// Partition of the modules topic.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// The offset (exclusive) up to which the partition was read back after the record was
    /// acknowledged: another record of the same version below it would have been reported as
    /// a lost race; one at or above it landed too late for this publisher to see (hosts still
    /// agree: they serve the later record).
    pub read_through: i64,
}

/// A module to publish, with what the audit trail records about it.
#[derive(Debug, Clone, Default)]
pub struct Release {
    /// Ruleset name.
    pub ruleset: String,
    /// Module bytes.
    pub module: Vec<u8>,
    /// RFC 3339 time.
    pub created_at: String,
    /// Why.
    pub reason: Option<String>,
    /// Change reference (ticket, pull request).
    pub change: Option<String>,
    /// Detached approvals (`flagforge approve`) to attach.
    pub approvals: Vec<Approval>,
}

/// Publishes envelopes to the modules topic.
pub struct Publisher {
    config: KafkaConfig,
    producer: FutureProducer,
    topic_ready: AtomicBool,
    audit_ready: AtomicBool,
    view: Mutex<TopicView<Ledger>>,
    audit: Mutex<TopicView<AuditLog>>,
}

fn poisoned() -> KafkaError {
    KafkaError::Client("the publisher's topic view lock is poisoned".into())
}

/// The partitions of `topic`, or `None` if it does not exist (yet).
fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Option<Vec<i32>>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((!ids.is_empty()).then_some(ids))
}

/// What a [`TopicView`] keeps of the records it reads.
trait Sink {
    fn observe(&mut self, key: Option<&[u8]>, value: &[u8]);
    /// An empty sink with the same settings (the log was lost: start over).
    fn fresh(&self) -> Self;
}

impl Sink for Ledger {
    fn observe(&mut self, key: Option<&[u8]>, value: &[u8]) {
        // Unverified records are counted by the ledger and never built upon; hosts reject
        // them too.
        let _ = Ledger::observe(self, key, value);
    }

    fn fresh(&self) -> Ledger {
        Ledger::new(self.trusted().clone(), self.trust().cloned())
    }
}

/// The audit topic's records as read, verified per publish (`verified_audit`: the chain is
/// checked as a whole).
#[derive(Default)]
struct AuditLog(Vec<Vec<u8>>);

impl Sink for AuditLog {
    fn observe(&mut self, _key: Option<&[u8]>, value: &[u8]) {
        self.0.push(value.to_vec());
    }

    fn fresh(&self) -> AuditLog {
        AuditLog::default()
    }
}

/// What the publisher has read of one topic: the modules topic through the [`Ledger`], which
/// keeps only verified envelopes, and the audit topic as records. One long-lived consumer per
/// topic, so a publish costs a watermark round trip and the new records, not a fresh client
/// and a full re-read.
struct TopicView<S> {
    topic: &'static str,
    consumer: Option<BaseConsumer>,
    /// Next offset to read, per assigned partition.
    next: BTreeMap<i32, i64>,
    /// The topic's partitions and when they were last listed (refreshed every 30 s: the
    /// topics almost never change shape, and a metadata round trip per publish adds latency).
    listed: Option<(Instant, Vec<i32>)>,
    sink: S,
}

impl<S: Sink> TopicView<S> {
    fn new(topic: &'static str, sink: S) -> TopicView<S> {
        TopicView {
            topic,
            consumer: None,
            next: BTreeMap::new(),
            listed: None,
            sink,
        }
    }

    /// Starts over with the same settings (a broker that lost its data).
    fn reset(&mut self) {
        *self = TopicView::new(self.topic, self.sink.fresh());
    }
}

impl<S: Sink> TopicView<S> {
    fn consumer(&mut self, config: &KafkaConfig) -> Result<&BaseConsumer, KafkaError> {
        if self.consumer.is_none() {
            self.consumer = Some(
                config
                    .client(&[
                        ("group.id", "flagforge-publisher"),
                        ("client.id", self.topic),
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
                None => partitions_of(consumer, self.topic)?.unwrap_or_default(),
            };
            let mut high = BTreeMap::new();
            for &p in &ids {
                let (_, h) = consumer.fetch_watermarks(self.topic, p, Duration::from_secs(10))?;
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
            self.reset();
            return self.catch_up(config);
        }
        if ids.iter().any(|p| !self.next.contains_key(p)) {
            let mut tpl = TopicPartitionList::new();
            for &p in &ids {
                let at = self
                    .next
                    .get(&p)
                    .map_or(Offset::Beginning, |n| Offset::Offset(*n));
                tpl.add_partition_offset(self.topic, p, at)?;
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
                    Some(e) => format!("timed out reading topic {}: {e}", self.topic),
                    None => format!("timed out reading topic {}", self.topic),
                }));
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(msg)) => {
                    self.next.insert(msg.partition(), msg.offset() + 1);
                    self.sink
                        .observe(msg.key(), msg.payload().unwrap_or_default());
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

/// What a release is planned from: the verified history of the ruleset and the verified
/// audit records, with what was ignored on the way.
struct Survey {
    history: History,
    ignored: BTreeMap<String, u64>,
    untrusted_newer: Option<(String, Position)>,
    audit: Vec<(Vec<u8>, AuditRecord)>,
}

/// How long an audit record above the modules topic may be another publisher's release in
/// flight (its module write follows within milliseconds) before it counts as interrupted.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(3);

impl Publisher {
    /// Reads both topics up to their ends now (blocking) and keeps what verifies.
    fn survey(&self, ruleset: &str) -> Result<Survey, KafkaError> {
        let (history, ignored, untrusted_newer, trusted) = {
            let mut view = self.view.lock().map_err(|_| poisoned())?;
            view.catch_up(&self.config)?;
            let l = &view.sink;
            (
                l.history(ruleset),
                l.ignored()
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), *v))
                    .collect::<BTreeMap<_, _>>(),
                l.untrusted_newer(ruleset).map(|(k, at)| (k.to_owned(), at)),
                l.trusted().clone(),
            )
        };
        let (audit, _) = {
            let mut log = self.audit.lock().map_err(|_| poisoned())?;
            log.catch_up(&self.config)?;
            verified_audit(&log.sink.0, &trusted)
        };
        Ok(Survey {
            history,
            ignored,
            untrusted_newer,
            audit,
        })
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
            audit_ready: AtomicBool::new(false),
            view: Mutex::new(TopicView::new(
                MODULES_TOPIC,
                Ledger::new(TrustedKeys::default(), None),
            )),
            audit: Mutex::new(TopicView::new(AUDIT_TOPIC, AuditLog::default())),
        })
    }

    async fn produce(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(i32, i64), KafkaError> {
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
        self.produce_to(MODULES_TOPIC, &envelope.ruleset, bytes, headers)
            .await
    }

    async fn produce_to(
        &self,
        topic: &str,
        key: &str,
        bytes: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(i32, i64), KafkaError> {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(bytes)
            .headers(headers);
        let delivery = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| KafkaError::from(e))?;
        Ok((delivery.partition, delivery.offset))
    }

    /// Creates the audit topic if it does not exist: one partition (one total order for the
    /// hash chain), never compacted, records kept for a century. (Not `retention.ms=-1`, Kafka's
    /// "forever": tansu 0.6 reads -1 literally and deletes every record at its next cleanup;
    /// found by the tampering test, which restarts the broker.)
    pub async fn ensure_audit_topic(&self) -> Result<(), KafkaError> {
        if self.audit_ready.load(Ordering::Relaxed) || self.exists(AUDIT_TOPIC)? {
            self.audit_ready.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = self.config.client(&[]).create()?;
        let topic = NewTopic::new(AUDIT_TOPIC, 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", AUDIT_RETENTION_MS)
            .set("retention.bytes", "-1");
        create(&admin, topic).await?;
        self.audit_ready.store(true, Ordering::Relaxed);
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
        create(&admin, topic).await?;
        self.topic_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn topic_exists(&self) -> Result<bool, KafkaError> {
        self.exists(MODULES_TOPIC)
    }

    fn exists(&self, topic: &str) -> Result<bool, KafkaError> {
        tokio::task::block_in_place(|| {
            let mut view = self.view.lock().map_err(|_| poisoned())?;
            let consumer = view.consumer(&self.config)?;
            Ok(partitions_of(consumer, topic)?.is_some())
        })
    }

    /// The newest verified envelope on the topic for `ruleset` (by the hosts' ordering rule).
    /// The first call reads every partition from the beginning; later calls read only what
    /// was appended since, up to the high watermark fetched now.
    pub fn latest(&self, ruleset: &str) -> Result<Option<Envelope>, KafkaError> {
        let mut view = self.view.lock().map_err(|_| poisoned())?;
        view.catch_up(&self.config)?;
        Ok(view.sink.history(ruleset).latest)
    }

    /// Verifies the topic's records against `trusted` as well as the signing key (the keys
    /// hosts trust: a version signed by a key the publisher does not trust is ignored when
    /// numbering, so hosts trusting that key would refuse the release).
    #[must_use]
    pub fn trusting(self, trusted: TrustedKeys) -> Publisher {
        if let Ok(mut view) = self.view.lock() {
            let trust = view.sink.trust().cloned();
            *view = TopicView::new(MODULES_TOPIC, Ledger::new(trusted, trust));
        }
        self
    }

    /// Publishes under a trust file: [`Self::release`] checks the policy hosts check, the
    /// topic's records are verified against its authors, and the version a release replaces
    /// is the newest one a governed host would serve.
    #[must_use]
    pub fn governed(self, trust: Trust) -> Publisher {
        if let Ok(mut view) = self.view.lock() {
            let trusted = view.sink.trusted().clone();
            *view = TopicView::new(MODULES_TOPIC, Ledger::new(trusted, Some(trust)));
        }
        self
    }

    /// Makes sure the ledger trusts `key` (a publisher always builds on its own releases).
    fn trust_signer(&self, key: &KeyPair) -> Result<Option<Trust>, KafkaError> {
        let mut view = self.view.lock().map_err(|_| poisoned())?;
        let trust = view.sink.trust().cloned();
        if trust.is_none() && view.sink.trusted().get(key.public().id()).is_none() {
            let mut trusted = view.sink.trusted().clone();
            trusted.insert(key.public());
            *view = TopicView::new(MODULES_TOPIC, Ledger::new(trusted, None));
        }
        Ok(trust)
    }

    /// (Needs a multi-threaded tokio runtime: the topic is read with blocking calls.)
    ///
    /// Publishes `module` for `ruleset` as the next version, unless the topic already holds
    /// this exact module: [`Self::release`] without approvals or a trust file.
    pub async fn publish(
        &self,
        ruleset: &str,
        module: Vec<u8>,
        key: &KeyPair,
        created_at: String,
        reason: Option<String>,
        change: Option<String>,
    ) -> Result<Published, KafkaError> {
        let release = Release {
            ruleset: ruleset.to_owned(),
            module,
            created_at,
            reason,
            change,
            approvals: Vec::new(),
        };
        self.release(release, key).await
    }

    /// (Needs a multi-threaded tokio runtime: the topics are read with blocking calls.)
    ///
    /// Publishes a release as the ruleset's next version:
    /// 1. reads the newest version on the modules topic and the audit chain;
    /// 2. if the audit log records a newer version of this ruleset that never reached the
    ///    modules topic (a publish interrupted between its two writes), completes it when
    ///    `module` is that version's module (the envelope is rebuilt from the audit record,
    ///    byte for byte) and refuses anything else;
    /// 3. diffs the module against the newest version (the semantic diff of
    ///    flagforge-governance), refuses forbidden migration transitions, signs the envelope
    ///    with the diff and the approvals, and with a trust file ([`Self::governed`]) checks the
    ///    same policy hosts check ([`flagforge_governance::policy::check`]);
    /// 4. appends the audit record, then produces the envelope. A crash after the first write
    ///    leaves an audit record whose module is completed by the next publish of it (step 2);
    ///    nothing is published without its record, and nothing is recorded twice.
    ///
    /// Fault injection for tests: with `FLAGFORGE_FAULT=crash-after-audit` in the environment
    /// the process aborts right after the audit write is acknowledged.
    ///
    /// Refuses envelopes above [`MAX_ENVELOPE_BYTES`] before producing. The caller validates
    /// the module first (`flagforge publish` loads it in wasmtime): hosts refuse modules that
    /// do not load, and a refused module must never become the newest version on the topic.
    pub async fn release(&self, release: Release, key: &KeyPair) -> Result<Published, KafkaError> {
        if release.module.len() > MAX_ENVELOPE_BYTES {
            return Err(ReleaseError::TooLarge {
                size: release.module.len(),
                limit: MAX_ENVELOPE_BYTES,
            }
            .into());
        }
        let trust = self.trust_signer(key)?;
        let trust = trust.as_ref();
        self.ensure_topic().await?;
        self.ensure_audit_topic().await?;
        let ruleset = release.ruleset.clone();
        // Reading the topics blocks; keep it off the async workers.
        let sha256 = hex::encode(Sha256::digest(&release.module));
        // A publish writes its audit record, then its module, milliseconds apart: an audit
        // record above the modules topic may be another publisher's release in flight rather
        // than an interrupted one. Read again for a moment before calling it interrupted.
        let in_flight_until = Instant::now() + IN_FLIGHT_GRACE;
        let (survey, planned) = loop {
            let survey = tokio::task::block_in_place(|| self.survey(&ruleset))?;
            let request = Request {
                ruleset: &ruleset,
                module: &release.module,
                sha256: &sha256,
                now_ms: now_ms(),
                created_at: &release.created_at,
                reason: release.reason.as_deref(),
                change: release.change.as_deref(),
            };
            let records: Vec<AuditRecord> = survey.audit.iter().map(|(_, r)| r.clone()).collect();
            match plan(request, &survey.history, &records) {
                Err(ReleaseError::Interrupted { .. }) if Instant::now() < in_flight_until => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                planned => break (survey, planned?),
            }
        };
        let Survey {
            history,
            ignored,
            untrusted_newer,
            audit,
        } = survey;
        let outcome =
            |position: Position, new_epoch, recovered, unchanged, changes, record| Published {
                ruleset: ruleset.clone(),
                version: position.version,
                epoch: position.epoch,
                new_epoch,
                sha256: sha256.clone(),
                unchanged,
                recovered,
                changes,
                untrusted_newer: untrusted_newer.clone(),
                ignored: ignored.clone(),
                record,
            };
        let (draft, changes, new_epoch) = match planned {
            Plan::Unchanged { position } => {
                return Ok(outcome(position, false, false, true, Vec::new(), None))
            }
            Plan::Complete(envelope) => {
                if envelope.module.len() > MAX_ENVELOPE_BYTES {
                    return Err(ReleaseError::TooLarge {
                        size: envelope.module.len(),
                        limit: MAX_ENVELOPE_BYTES,
                    }
                    .into());
                }
                let (partition, offset) = self.produce(&envelope, &envelope.encode()).await?;
                let changes =
                    decode_changes(envelope.changes.as_deref().map_or(&[][..], |c| &c[..]))
                        .unwrap_or_default();
                let record = Landed {
                    partition,
                    offset,
                    read_through: offset + 1,
                };
                return Ok(outcome(
                    envelope.position(),
                    false,
                    true,
                    false,
                    changes,
                    Some(record),
                ));
            }
            Plan::Next {
                draft,
                changes,
                new_epoch,
            } => (draft, changes, new_epoch),
        };
        let (envelope, bytes) = seal(
            draft,
            key,
            &release.approvals,
            trust,
            history.latest.as_ref(),
            MAX_ENVELOPE_BYTES,
        )?;
        let name = |id: &str| trust.map_or_else(|| id.to_owned(), |t| t.identity(id));
        // The chain continues from the last verified record: forged records on the audit
        // topic are never linked to.
        let record = AuditRecord {
            format: AUDIT_FORMAT,
            seq: audit.len() as u64,
            prev: audit.last().map(|(b, _)| link(b)).unwrap_or_default(),
            recorded_at: envelope.created_at.clone(),
            author: name(&envelope.author),
            approvers: envelope
                .signatures
                .iter()
                .filter(|s| s.role == "approver")
                .map(|s| name(&s.key_id))
                .collect(),
            envelope: without_module(&envelope),
        };
        self.produce_to(AUDIT_TOPIC, &ruleset, &record.encode(), OwnedHeaders::new())
            .await?;
        if std::env::var("FLAGFORGE_FAULT").as_deref() == Ok("crash-after-audit") {
            std::process::abort();
        }
        let (partition, offset) = self.produce(&envelope, &bytes).await?;
        // Two publishers may have picked the same version; the later record wins on every host
        // (flagforge-distribution's ordering rule). Read back: if a later record took this
        // version, say so. (If it lands after this read, this publish still reports success:
        // without compare-and-set on the topic no publisher can know. Hosts agree either way.)
        let (winner, read_through) = tokio::task::block_in_place(|| {
            let mut view = self.view.lock().map_err(|_| poisoned())?;
            view.catch_up(&self.config)?;
            let read_through = view.next.get(&partition).copied().unwrap_or(offset + 1);
            Ok::<_, KafkaError>((view.sink.history(&ruleset).latest, read_through))
        })?;
        let record = Landed {
            partition,
            offset,
            read_through,
        };
        if let Some(winner) = winner {
            if winner.position() == envelope.position() && winner.sha256 != envelope.sha256 {
                return Err(ReleaseError::LostRace {
                    ruleset,
                    position: winner.position(),
                    sha256: winner.sha256,
                }
                .into());
            }
        }
        Ok(outcome(
            envelope.position(),
            new_epoch,
            false,
            false,
            changes,
            Some(record),
        ))
    }
}

/// The publisher's clock in Unix milliseconds (the epoch a new numbering starts).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// 100 years: "forever" on every Kafka-protocol broker we test against.
const AUDIT_RETENTION_MS: &str = "3153600000000";

/// Creates a topic; one that already exists is fine.
async fn create(
    admin: &AdminClient<DefaultClientContext>,
    topic: NewTopic<'_>,
) -> Result<(), KafkaError> {
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

/// Every envelope still on the modules topic that verifies against `trusted` under its record
/// key (compaction keeps at least the newest per ruleset), oldest first: what
/// `flagforge replay` searches for a recorded module hash.
pub fn history(config: &KafkaConfig, trusted: &TrustedKeys) -> Result<Vec<Envelope>, KafkaError> {
    Ok(read_topic(config, MODULES_TOPIC)?
        .iter()
        .filter_map(|m| Envelope::from_record(m.key.as_deref(), &m.value, trusted).ok())
        .collect())
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// Every message on `topic` up to its end now, in offset order per partition (partitions one
/// after another); an empty list if the topic does not exist.
pub fn read_topic(config: &KafkaConfig, topic: &str) -> Result<Vec<Record>, KafkaError> {
    let consumer: BaseConsumer = config
        .client(&[
            ("group.id", "flagforge-reader"),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "10"),
            ("max.partition.fetch.bytes", "2000000"),
        ])
        .create()?;
    let ids = partitions_of(&consumer, topic)?.unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for &p in &ids {
        let (low, h) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if h > low {
            high.insert(p, h);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
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
            return Err(KafkaError::Client(format!(
                "timed out reading topic {topic}"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                out.push(Record {
                    partition: msg.partition(),
                    offset: msg.offset(),
                    key: msg.key().map(<[u8]>::to_vec),
                    value: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                });
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
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}
