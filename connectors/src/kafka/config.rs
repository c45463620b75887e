//! What a Kafka trigger needs to know, and the librdkafka configuration it produces.
//!
//! [`KafkaSourceConfig::client_config`] is pure: it validates the fields and builds the
//! `ClientConfig` without any I/O. Invariants of the produced configuration:
//!
//! - offsets are only ever committed explicitly by [`super::KafkaSource`] on ack
//!   (`enable.auto.commit=false`, `enable.auto.offset.store=false`); user options cannot
//!   change that, nor the brokers, group, client id or start position, which have their
//!   own fields;
//! - the defaults in [`DEFAULT_OPTIONS`] apply unless the user's `options` override them.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use serde::{Deserialize, Serialize};

use crate::source::SourceError;
use crate::text::shown;

/// Where a consumer group that has no committed offset for a partition begins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaStart {
    /// At the oldest message the broker still keeps.
    #[default]
    Earliest,
    /// At the first message produced after the group joined.
    Latest,
}

impl KafkaStart {
    /// The value of librdkafka's `auto.offset.reset` for this start.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaStart::Earliest => "earliest",
            KafkaStart::Latest => "latest",
        }
    }
}

impl fmt::Display for KafkaStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's Kafka trigger: one topic consumed by one consumer group. `Debug` shows the
/// names of the `options`, never their values (they may hold credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// The job's name; the client id is `sluice-<job>` and logs carry it.
    pub job: String,
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic to consume (a literal name, not a pattern).
    pub topic: String,
    /// The consumer group; committed offsets belong to it.
    pub group: String,
    /// Where the group begins on partitions it has no committed offset for.
    pub start: KafkaStart,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.*`); they may override
    /// [`DEFAULT_OPTIONS`] but not the [`MANAGED_OPTIONS`].
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSourceConfig")
            .field("job", &self.job)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("start", &self.start)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Defaults the user's `options` may override, with why each is set.
pub const DEFAULT_OPTIONS: &[(&str, &str)] = &[
    // Some brokers hold every JoinGroup for half the session timeout; librdkafka's 45 s
    // default makes each join take over 20 s there.
    ("session.timeout.ms", "6000"),
    // How long librdkafka waits to fetch again once its queue is over
    // `queued.max.messages.kbytes`. Its 1 s default cut throughput 3-4x. The limit below
    // is compared with the consumer's whole queue (every partition's queue forwards to
    // it), and 2 MiB is about 20 ms of work at the platform's rate: with 20 ms here the
    // queue ran dry before the next fetch answered, and the poll thread waited for
    // messages for 1.4 s of a 3 s backlog run. 5 ms cut that wait to 0.4 s (BENCHMARKS.md).
    ("fetch.queue.backoff.ms", "5"),
    // librdkafka prefetches up to 64 MiB of messages by default, plus its own overhead
    // per message (about as much again for ~300-byte messages): the largest single share
    // of a job's memory. 2 MiB is still a few fetch round trips of data at the platform's
    // rate (measured on a local broker: 2, 4 and 16 MiB move 3M events equally fast, and
    // 2 MiB peaks 65 MiB lower than 16 MiB), and the pipeline holds its own bounded
    // queue of batches behind it. A distant broker may want more: users can override it.
    ("queued.max.messages.kbytes", "2048"),
    // Statistics carry the per-partition high watermark the backlog is computed from.
    ("statistics.interval.ms", "1000"),
    // librdkafka's own default, stated so a status page shows it.
    ("partition.assignment.strategy", "range,roundrobin"),
];

/// Properties set from the dedicated fields or fixed for the delivery guarantee; `options`
/// may not contain them.
pub const MANAGED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "client.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LENGTH: usize = 249;

impl KafkaSourceConfig {
    /// The librdkafka client id: `sluice-<job>`.
    pub fn client_id(&self) -> String {
        format!("sluice-{}", self.job)
    }

    /// Checks the fields (no I/O) and builds the consumer configuration.
    pub fn client_config(&self) -> Result<ClientConfig, SourceError> {
        self.validate()?;
        let mut config = ClientConfig::new();
        for (key, value) in DEFAULT_OPTIONS {
            config.set(*key, *value);
        }
        for (key, value) in &self.options {
            config.set(key.as_str(), value.as_str());
        }
        config
            .set("bootstrap.servers", self.brokers.as_str())
            .set("group.id", self.group.as_str())
            .set("client.id", self.client_id())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", self.start.as_str())
            // librdkafka's warnings and errors are forwarded to the log; its debug output
            // is opt-in through the `debug` option.
            .set_log_level(RDKafkaLogLevel::Warning);
        Ok(config)
    }

    fn validate(&self) -> Result<(), SourceError> {
        if self.brokers.trim().is_empty() {
            return Err(config_error(
                "brokers is empty; give host:port[,host:port…]",
            ));
        }
        if self.group.trim().is_empty() {
            return Err(config_error("group is empty"));
        }
        validate_topic(&self.topic)?;
        if let Some(key) = self
            .options
            .keys()
            .find(|key| MANAGED_OPTIONS.contains(&key.as_str()))
        {
            return Err(config_error(format!(
                "option `{key}` cannot be set in options: it is set from the trigger's fields \
                 or fixed so offsets are only committed after the output is durable"
            )));
        }
        Ok(())
    }
}

/// Kafka's rule for topic names, as a message says it.
pub const TOPIC_RULE: &str =
    "letters, digits, '.', '_' and '-', at most 249 characters, not \".\" or \"..\"";

/// Whether `topic` follows Kafka's rule ([`TOPIC_RULE`]): a literal name, not a pattern.
pub fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LENGTH
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn validate_topic(topic: &str) -> Result<(), SourceError> {
    if !is_topic_name(topic) {
        return Err(config_error(format!(
            "invalid topic {}; allowed: {TOPIC_RULE}",
            shown(topic)
        )));
    }
    Ok(())
}

fn config_error(message: impl Into<String>) -> SourceError {
    SourceError::Config {
        connector: "kafka",
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaSourceConfig {
        KafkaSourceConfig {
            job: "clicks".into(),
            brokers: "127.0.0.1:9092".into(),
            topic: "clicks.v1".into(),
            group: "sluice-clicks".into(),
            start: KafkaStart::Earliest,
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn produces_managed_settings_and_defaults() {
        let client = config().client_config().unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(client.get("group.id"), Some("sluice-clicks"));
        assert_eq!(client.get("client.id"), Some("sluice-clicks"));
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(client.get("session.timeout.ms"), Some("6000"));
        assert_eq!(client.get("fetch.queue.backoff.ms"), Some("5"));
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(client.get("statistics.interval.ms"), Some("1000"));
        assert_eq!(
            client.get("partition.assignment.strategy"),
            Some("range,roundrobin")
        );
        // The produced configuration is one librdkafka accepts.
        client.create_native_config().unwrap();
    }

    #[test]
    fn latest_start_sets_offset_reset() {
        let mut config = config();
        config.start = KafkaStart::Latest;
        let client = config.client_config().unwrap();
        assert_eq!(client.get("auto.offset.reset"), Some("latest"));
    }

    #[test]
    fn options_override_defaults_and_add_properties() {
        let mut config = config();
        config
            .options
            .insert("session.timeout.ms".into(), "45000".into());
        config.options.insert(
            "partition.assignment.strategy".into(),
            "cooperative-sticky".into(),
        );
        config
            .options
            .insert("security.protocol".into(), "ssl".into());
        let client = config.client_config().unwrap();
        assert_eq!(client.get("session.timeout.ms"), Some("45000"));
        assert_eq!(
            client.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
        assert_eq!(client.get("security.protocol"), Some("ssl"));
        // Untouched defaults stay.
        assert_eq!(client.get("fetch.queue.backoff.ms"), Some("5"));
    }

    #[test]
    fn options_cannot_override_managed_settings() {
        for key in MANAGED_OPTIONS {
            let mut config = config();
            config.options.insert((*key).into(), "true".into());
            let err = config.client_config().unwrap_err();
            assert!(matches!(err, SourceError::Config { .. }), "{key}: {err}");
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn rejects_bad_topics_brokers_and_groups() {
        for topic in ["", ".", "a b", "^clicks.*", "a/b", &"x".repeat(250)] {
            let mut config = config();
            config.topic = topic.into();
            assert!(
                matches!(config.client_config(), Err(SourceError::Config { .. })),
                "topic {topic:?} was accepted"
            );
        }
        let mut no_brokers = config();
        no_brokers.brokers = " ".into();
        let err = no_brokers.client_config().unwrap_err();
        assert!(err.to_string().contains("brokers"), "{err}");
        let mut no_group = config();
        no_group.group = String::new();
        let err = no_group.client_config().unwrap_err();
        assert!(err.to_string().contains("group"), "{err}");
    }

    #[test]
    fn debug_never_shows_option_values() {
        let mut config = config();
        config
            .options
            .insert("sasl.password".into(), "hunter2-secret".into());
        let printed = format!("{config:?}");
        assert!(printed.contains("sasl.password"), "{printed}");
        assert!(!printed.contains("hunter2-secret"), "{printed}");
    }

    #[test]
    fn start_reads_as_lowercase() {
        let start: KafkaStart = serde_json::from_str("\"latest\"").unwrap();
        assert_eq!(start, KafkaStart::Latest);
        assert_eq!(KafkaStart::default().to_string(), "earliest");
    }
}
