//! The Kafka connector's tables in `job.toml`, `[trigger.kafka]` and
//! `[dead_letter.kafka]`: the serde structs that mirror them (unknown fields rejected,
//! every field optional so a missing one is reported with every other problem) and the
//! checks that turn them into [`KafkaSourceConfig`] and [`KafkaDeadLetterConfig`]. The
//! rules of names are the connector's ([`is_topic_name`], [`MANAGED_OPTIONS`]); the field
//! checks are the kit's ([`crate::config_check`]).
//!
//! The same trigger table is read for `[trigger.bucket.kafka]`; its errors are then moved
//! to that name by the bucket connector.

use std::sync::Arc;

use serde::Deserialize;

use super::{
    KafkaDeadLetterConfig, KafkaSourceConfig, KafkaStart, MANAGED_OPTIONS,
    MANAGED_PRODUCER_OPTIONS, TOPIC_RULE, is_topic_name,
};
use crate::config_check::Checker;
use crate::config_check::raw::RawOptions;
use crate::config_check::secret::shown;
use crate::dead_letter::LetterBroker;
use crate::registry::{DeadLetterTable, TriggerTable};
use crate::trigger::Trigger;

/// `[trigger.kafka]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTrigger {
    /// Bootstrap servers, `host:port[,host:port…]`; `${NAME}` references are expanded from
    /// the environment.
    pub brokers: Option<String>,
    /// A named connection from `sluice.toml` (not supported yet; use `brokers`).
    pub connection: Option<String>,
    /// The topic to consume (required): letters, digits, `.`, `_` and `-`, at most 249
    /// characters.
    pub topic: Option<String>,
    /// Consumer group; default `sluice-<name>`. Jobs sharing a group share the work.
    pub group: Option<String>,
    /// Where a new consumer group begins: `"earliest"` (default) or `"latest"`.
    pub start: Option<String>,
    /// Extra librdkafka properties, e.g. `"security.protocol" = "SASL_SSL"`. Values are
    /// strings (numbers and booleans are accepted and written as text) with `${NAME}`
    /// expanded; a key naming a secret (`secret`, `password`, `token`) must be a `${NAME}`
    /// reference.
    #[serde(default)]
    pub options: RawOptions,
}

/// `[dead_letter.kafka]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaDeadLetter {
    /// Bootstrap servers, `host:port[,host:port…]`, expanded; default: the Kafka
    /// trigger's `brokers` (required when the trigger is not Kafka).
    pub brokers: Option<String>,
    /// The topic dead letters are produced to (required); it must exist.
    pub topic: Option<String>,
    /// The consumer group `sluice dlq replay` commits to once letters are replayed;
    /// default `sluice-<name>-dead-letters`.
    pub group: Option<String>,
    /// Extra librdkafka properties for the producer and the replay consumer, like
    /// `[trigger.kafka.options]`.
    #[serde(default)]
    pub options: RawOptions,
}

impl TriggerTable for RawKafkaTrigger {
    fn check(&self, checker: &mut Checker<'_>, job: Option<&str>) -> Option<Arc<dyn Trigger>> {
        checker
            .kafka(self, job)
            .map(|config| Arc::new(config) as Arc<dyn Trigger>)
    }
}

impl DeadLetterTable for RawKafkaDeadLetter {
    fn check(
        &self,
        checker: &mut Checker<'_>,
        trigger: Option<&dyn Trigger>,
        job: Option<&str>,
    ) -> Option<Arc<dyn LetterBroker>> {
        checker
            .kafka_dead_letter(self, trigger, job)
            .map(|config| Arc::new(config) as Arc<dyn LetterBroker>)
    }
}

impl Checker<'_> {
    /// The Kafka connector's configuration for `[trigger.kafka]` (or
    /// `[trigger.bucket.kafka]`).
    pub(crate) fn kafka(
        &mut self,
        raw: &RawKafkaTrigger,
        job_name: Option<&str>,
    ) -> Option<KafkaSourceConfig> {
        let brokers = match (&raw.brokers, &raw.connection) {
            (_, Some(_)) => {
                self.error(
                    "trigger.kafka.connection",
                    "named connections are not supported yet in this build; use brokers = \"host:port\"",
                );
                None
            }
            (Some(brokers), None) => self
                .expand("trigger.kafka.brokers", brokers)
                .and_then(|expanded| self.brokers("trigger.kafka.brokers", &expanded)),
            (None, None) => {
                self.missing("trigger.kafka.brokers", "brokers = \"localhost:9092\"");
                None
            }
        };
        let topic = match raw.topic.as_deref() {
            None => {
                self.missing("trigger.kafka.topic", "topic = \"clicks\"");
                None
            }
            Some(topic) if is_topic_name(topic) => Some(topic.to_string()),
            Some(topic) => {
                self.error(
                    "trigger.kafka.topic",
                    format!("invalid topic {}; allowed: {TOPIC_RULE}", shown(topic)),
                );
                None
            }
        };
        let group = match raw.group.as_deref() {
            Some(group) => self.group_name("trigger.kafka.group", group, "sluice-<name>"),
            None => job_name.map(|name| format!("sluice-{name}")),
        };
        for key in raw.options.0.iter().map(|(key, _)| key) {
            if MANAGED_OPTIONS.contains(&key.as_str()) {
                self.error(
                    format!("trigger.kafka.options.{key}"),
                    "set by sluice (from brokers, group and start, or fixed so offsets are committed only after the output is durable); remove it",
                );
            }
        }
        let start = self.choice(
            "trigger.kafka.start",
            raw.start.as_deref(),
            KafkaStart::Earliest,
            &[
                ("earliest", KafkaStart::Earliest),
                ("latest", KafkaStart::Latest),
            ],
            &[],
        );
        let options = self.options("trigger.kafka.options", &raw.options, true);
        Some(KafkaSourceConfig {
            job: job_name.unwrap_or_default().to_owned(),
            brokers: brokers?,
            topic: topic?,
            group: group?,
            start,
            options,
        })
    }

    /// Checks a consumer group name: not empty, no control characters, at most 249
    /// bytes (what brokers accept).
    pub(crate) fn group_name(&mut self, field: &str, group: &str, default: &str) -> Option<String> {
        if group.trim().is_empty() {
            self.error(
                field,
                format!("empty consumer group; omit it to use {default}"),
            );
            return None;
        }
        if group.chars().any(char::is_control) || group.len() > 249 {
            self.error(
                field,
                format!(
                    "invalid consumer group {}; allowed: at most 249 bytes without control characters (NUL, newline, …)",
                    shown(group)
                ),
            );
            return None;
        }
        Some(group.to_string())
    }

    /// Checks `host:port[,host:port…]` and returns it without stray spaces.
    pub(crate) fn brokers(&mut self, field: &str, brokers: &str) -> Option<String> {
        let entries: Vec<&str> = brokers.split(',').map(str::trim).collect();
        let well_formed = entries.iter().all(|entry| {
            entry.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        });
        if !well_formed {
            self.error(
                field,
                format!("invalid brokers {}; allowed: host:port[,host:port...], e.g. \"localhost:9092\"", shown(brokers)),
            );
            return None;
        }
        Some(entries.join(","))
    }

    pub(crate) fn kafka_dead_letter(
        &mut self,
        raw: &RawKafkaDeadLetter,
        trigger: Option<&dyn Trigger>,
        job_name: Option<&str>,
    ) -> Option<KafkaDeadLetterConfig> {
        const BROKERS: &str = "dead_letter.kafka.brokers";
        let kafka_trigger =
            trigger.and_then(|trigger| trigger.as_any().downcast_ref::<KafkaSourceConfig>());
        let brokers = match (&raw.brokers, trigger, kafka_trigger) {
            (Some(brokers), _, _) => self
                .expand(BROKERS, brokers)
                .and_then(|expanded| self.brokers(BROKERS, &expanded)),
            (None, _, Some(kafka)) => Some(kafka.brokers.clone()),
            // The trigger has errors of its own, already reported.
            (None, None, _) => None,
            (None, Some(_), None) => {
                self.error(
                    BROKERS,
                    "required when the trigger is not Kafka, e.g. brokers = \"localhost:9092\"",
                );
                None
            }
        };
        let topic = match raw.topic.as_deref() {
            None => {
                self.missing("dead_letter.kafka.topic", "topic = \"clicks-dead-letters\"");
                None
            }
            Some(topic) if is_topic_name(topic) => Some(topic.to_owned()),
            Some(topic) => {
                self.error(
                    "dead_letter.kafka.topic",
                    format!("invalid topic {}; allowed: {TOPIC_RULE}", shown(topic)),
                );
                None
            }
        };
        if let (Some(kafka), Some(topic)) = (kafka_trigger, &topic)
            && kafka.topic == *topic
            && raw.brokers.is_none()
        {
            self.error(
                "dead_letter.kafka.topic",
                "is the topic the job consumes; dead letters need a topic of their own",
            );
        }
        let group = match raw.group.as_deref() {
            Some(group) => self.group_name(
                "dead_letter.kafka.group",
                group,
                "sluice-<name>-dead-letters",
            ),
            None => job_name.map(|name| format!("sluice-{name}-dead-letters")),
        };
        for key in raw.options.0.iter().map(|(key, _)| key) {
            if MANAGED_PRODUCER_OPTIONS.contains(&key.as_str()) {
                self.error(
                    format!("dead_letter.kafka.options.{key}"),
                    "set by sluice (from brokers and group, or fixed so a dead letter is durable before its position is acknowledged); remove it",
                );
            }
        }
        let options = self.options("dead_letter.kafka.options", &raw.options, true);
        Some(KafkaDeadLetterConfig {
            brokers: brokers?,
            topic: topic?,
            group: group?,
            options,
        })
    }
}
