//! Reading the modules topic from the beginning of every partition, forever, without a
//! consumer group, and offering every record to the [`Registry`]. librdkafka reconnects by
//! itself when the broker comes back; meanwhile the registry keeps serving what it has.
//!
//! Two librdkafka clients, each used by one task only: the consumer (fetching records) and a
//! probe (a metadata and watermark round trip every 250 ms). Sharing one client between the
//! fetch loop and position/watermark queries from another thread crashed librdkafka 2.12.1 in
//! its metadata cache when the broker came back empty. The probe's answers are the only
//! source of "broker contact": a host that never reached its broker is stale. When the
//! probe sees the log end below what was already read (the broker lost its data), the
//! consumer is replaced by a fresh one reading from the beginning.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError, Registry, MODULES_TOPIC};

/// Most messages offered to the registry together.
const MAX_BATCH: usize = 256;
/// How often the probe confirms broker contact.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long one probe round trip may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A running subscription; dropping it stops the task.
pub struct Subscriber {
    task: tokio::task::JoinHandle<()>,
    probe: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
        self.probe.abort();
    }
}

/// What the consumer task and the probe share: the next offset to read per partition (from
/// records received), and the probe's request to start over.
#[derive(Default)]
struct Progress {
    next: Mutex<BTreeMap<i32, i64>>,
    restart: AtomicBool,
}

fn consumer(config: &KafkaConfig) -> Result<StreamConsumer, KafkaError> {
    // librdkafka needs a group id even with manual assignment; no group is joined.
    Ok(config
        .client(&[
            ("group.id", "flagforge-host"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "50"),
            ("max.partition.fetch.bytes", "2000000"),
        ])
        .create()?)
}

impl Subscriber {
    /// Starts consuming on the current tokio runtime.
    pub fn start(config: &KafkaConfig, registry: Arc<Registry>) -> Result<Subscriber, KafkaError> {
        let first = consumer(config)?;
        let probe_client: BaseConsumer = config
            .client(&[
                ("group.id", "flagforge-host-probe"),
                ("enable.auto.commit", "false"),
            ])
            .create()?;
        let progress = Arc::new(Progress::default());
        let probe = {
            let (progress, registry) = (Arc::clone(&progress), Arc::clone(&registry));
            let probe_client = Arc::new(probe_client);
            tokio::spawn(async move {
                loop {
                    let (c, p, r) = (
                        Arc::clone(&probe_client),
                        Arc::clone(&progress),
                        Arc::clone(&registry),
                    );
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(lag) = probe_once(&c, &p) {
                            r.confirm_contact(lag);
                        }
                    })
                    .await;
                    tokio::time::sleep(PROBE_EVERY).await;
                }
            })
        };
        let config = config.clone();
        let task = tokio::spawn(async move {
            let mut current = Some(first);
            loop {
                let c = match current.take() {
                    Some(c) => c,
                    None => match consumer(&config) {
                        Ok(c) => c,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            continue;
                        }
                    },
                };
                consume(c, &progress, &registry).await;
                log::warn!(
                    "the modules topic ends below what this host already read (the broker lost its data?): reading it again from the beginning with a new consumer"
                );
            }
        });
        Ok(Subscriber { task, probe })
    }
}

/// Assigns every partition from the beginning, then offers records until the probe asks for
/// a restart.
async fn consume(consumer: StreamConsumer, progress: &Progress, registry: &Arc<Registry>) {
    let consumer = Arc::new(consumer);
    if let Ok(mut next) = progress.next.lock() {
        next.clear();
    }
    progress.restart.store(false, Ordering::SeqCst);
    // Wait for the topic to exist, then assign every partition from the beginning.
    loop {
        let c = Arc::clone(&consumer);
        let assigned = tokio::task::spawn_blocking(move || assign_all(&c))
            .await
            .unwrap_or(false);
        if assigned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while !progress.restart.load(Ordering::SeqCst) {
        // Wait for one message (at most a second, to notice a restart request), then take
        // whatever else is already queued (a zero timeout still polls once), so a burst of
        // versions costs one compilation per ruleset, not one per version.
        type Batch = Vec<(Option<Vec<u8>>, Vec<u8>)>;
        let mut batch: Batch = Vec::new();
        let take = |msg: &rdkafka::message::BorrowedMessage<'_>, batch: &mut Batch| {
            if let Ok(mut next) = progress.next.lock() {
                next.insert(msg.partition(), msg.offset() + 1);
            }
            batch.push((
                msg.key().map(<[u8]>::to_vec),
                msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            ));
        };
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(msg)) => take(&msg, &mut batch),
            Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => continue,
        }
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(Ok(msg)) => take(&msg, &mut batch),
                _ => break,
            }
        }
        let r = Arc::clone(registry);
        let _ = tokio::task::spawn_blocking(move || {
            let refs: Vec<(Option<&[u8]>, &[u8])> = batch
                .iter()
                .map(|(k, v)| (k.as_deref(), v.as_slice()))
                .collect();
            r.offer_batch(&refs)
        })
        .await;
    }
}

/// One round trip to the broker with the probe's own client: the topic's partitions and
/// their high watermarks. Returns the lag (records on the topic not yet read), or `None` when
/// the broker did not answer. Asks the consumer to start over when a partition's log ends
/// below what was already read.
fn probe_once(probe: &BaseConsumer, progress: &Progress) -> Option<i64> {
    let metadata = probe
        .fetch_metadata(Some(MODULES_TOPIC), PROBE_TIMEOUT)
        .ok()?;
    let next = progress.next.lock().ok()?.clone();
    let mut lag = 0;
    let mut went_back = false;
    for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
        for p in t.partitions() {
            let (_, high) = probe
                .fetch_watermarks(MODULES_TOPIC, p.id(), PROBE_TIMEOUT)
                .ok()?;
            let read = next.get(&p.id()).copied().unwrap_or(0);
            went_back |= high < read;
            lag += (high - read).max(0);
        }
    }
    // The topic is gone while records were read from it: the broker lost its data too.
    let topic_gone = metadata
        .topics()
        .iter()
        .all(|t| t.error().is_some() || t.partitions().is_empty());
    if went_back || (topic_gone && !next.is_empty()) {
        progress.restart.store(true, Ordering::SeqCst);
    }
    Some(lag)
}

fn assign_all(consumer: &StreamConsumer) -> bool {
    let Ok(metadata) = consumer.fetch_metadata(Some(MODULES_TOPIC), Duration::from_secs(5)) else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if t.error().is_some() {
            return false;
        }
        for p in t.partitions() {
            if tpl
                .add_partition_offset(MODULES_TOPIC, p.id(), Offset::Beginning)
                .is_err()
            {
                return false;
            }
        }
    }
    tpl.count() > 0 && consumer.assign(&tpl).is_ok()
}
