//! Reading the modules topic from the beginning of every partition, forever, without a
//! consumer group, and offering every message to the [`Registry`]. librdkafka reconnects by
//! itself when the broker comes back; meanwhile the registry keeps serving what it has.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError, Registry, MODULES_TOPIC};

/// Most messages offered to the registry together.
const MAX_BATCH: usize = 256;

/// A running subscription; dropping it stops the task.
pub struct Subscriber {
    task: tokio::task::JoinHandle<()>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
        self.heartbeat.abort();
    }
}

impl Subscriber {
    /// Starts consuming on the current tokio runtime.
    pub fn start(config: &KafkaConfig, registry: Arc<Registry>) -> Result<Subscriber, KafkaError> {
        // librdkafka needs a group id even with manual assignment; no group is joined.
        let consumer: StreamConsumer = config
            .client(&[
                ("group.id", "flagforge-host"),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "50"),
                ("max.partition.fetch.bytes", "2000000"),
                ("topic.metadata.refresh.interval.ms", "1000"),
            ])
            .create()?;
        let consumer = Arc::new(consumer);
        // Confirm broker contact (and measure lag) every 250 ms, so a host can say how old
        // its configuration may be even when nothing is being published.
        let (c, r) = (Arc::clone(&consumer), Arc::clone(&registry));
        let heartbeat = tokio::spawn(async move {
            loop {
                let (c2, r2) = (Arc::clone(&c), Arc::clone(&r));
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(lag) = lag(&c2) {
                        r2.confirm_contact(lag);
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let task = tokio::spawn(async move {
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
            loop {
                // Wait for one message, then take whatever else is already queued (a zero
                // timeout still polls once), so a burst of versions costs one compilation per
                // ruleset, not one per version.
                let mut batch: Vec<Vec<u8>> = Vec::new();
                match consumer.recv().await {
                    Ok(msg) => batch.push(msg.payload().map(<[u8]>::to_vec).unwrap_or_default()),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                        Ok(Ok(msg)) => {
                            batch.push(msg.payload().map(<[u8]>::to_vec).unwrap_or_default())
                        }
                        _ => break,
                    }
                }
                let r = Arc::clone(&registry);
                let _ = tokio::task::spawn_blocking(move || {
                    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    r.offer_batch(&refs)
                })
                .await;
            }
        });
        Ok(Subscriber { task, heartbeat })
    }
}

/// Messages on the topic not yet read, from a round trip to the broker; `None` if the broker
/// did not answer.
fn lag(consumer: &StreamConsumer) -> Option<i64> {
    let position = consumer.position().ok()?;
    let mut lag = 0;
    for elem in position.elements() {
        let (_, high) = consumer
            .fetch_watermarks(elem.topic(), elem.partition(), Duration::from_millis(500))
            .ok()?;
        let at = match elem.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        };
        lag += (high - at).max(0);
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
