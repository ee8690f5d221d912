//! Kafka distribution of modules: [`Publisher`] produces signed envelopes to the compacted
//! modules topic; [`Subscriber`] reads the topic from the beginning (manual assignment, no
//! consumer group: every host needs every ruleset) and feeds a [`Registry`], which verifies,
//! orders, compiles off the request path and swaps modules atomically, persisting the last good
//! envelope per ruleset to the snapshot directory.
//! Rejections are counted by reason and logged (via `log`) once per distinct message.

#[cfg(feature = "broker")]
mod guard;
#[cfg(feature = "broker")]
mod publish;
mod registry;
#[cfg(feature = "broker")]
mod subscribe;

#[cfg(feature = "broker")]
pub use publish::{history, read_topic, Landed, Published, Publisher, Record, Release};
pub use registry::{changed_flags, Installed, Offer, Registry, Served, Source};
#[cfg(feature = "broker")]
pub use subscribe::Subscriber;

use flagforge_governance::release::ReleaseError;
#[cfg(feature = "broker")]
use rdkafka::ClientConfig;

/// The compacted topic holding one envelope per ruleset (key = ruleset name).
pub const MODULES_TOPIC: &str = "flagforge.modules";

/// The append-only audit topic: one hash-chained record per publish
/// (`flagforge_governance::audit`), one partition, kept forever.
pub const AUDIT_TOPIC: &str = "flagforge.audit";

/// Largest envelope produced: well under the broker's default 1 MB message limit.
pub const MAX_ENVELOPE_BYTES: usize = flagforge_protocol::limits::MAX_PUBLISH_BYTES;

/// Failure talking to Kafka or preparing a message.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client could not be created or an operation failed.
    #[error("kafka: {0}")]
    Client(String),
    /// The release cannot be published (typed: see [`ReleaseError`]).
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

#[cfg(feature = "broker")]
impl From<rdkafka::error::KafkaError> for KafkaError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        KafkaError::Client(e.to_string())
    }
}

/// Broker address and librdkafka settings passed through (`-X key=value`).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Extra librdkafka settings, applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A config for the given brokers.
    #[must_use]
    pub fn new(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            extra: Vec::new(),
        }
    }

    #[cfg(feature = "broker")]
    pub(crate) fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        guard::linked();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("message.max.bytes", "2000000");
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}
