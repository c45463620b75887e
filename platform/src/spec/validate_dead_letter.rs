//! The `[dead_letter]` section: one destination — NDJSON objects under a store prefix
//! (`url`), a Kafka topic (`[dead_letter.kafka]`) or an AMQP queue (`[dead_letter.amqp]`).
//!
//! The broker tables mirror the trigger tables (`brokers`, `topic`, `options`; `url`,
//! `queue`, `declare`) and take their broker address from the job's trigger when it is
//! the same kind and none is given. Properties the producer sets itself for durability
//! (acks, idempotence, …) may not be overridden in `options`.

use super::checker::Checker;
use super::raw::{RawAmqpDeadLetter, RawDeadLetter, RawKafkaDeadLetter};
use super::types::{
    AmqpDeadLetterConfig, AmqpSourceConfig, DeadLetterSpec, KafkaDeadLetterConfig,
    KafkaSourceConfig, TriggerSpec,
};
use sluice_connectors::kafka::{MANAGED_PRODUCER_OPTIONS, TOPIC_RULE, is_topic_name};

impl Checker<'_> {
    /// Validates `[dead_letter]`; `None` when it declares nothing or has errors.
    pub(super) fn dead_letter(
        &mut self,
        raw: &RawDeadLetter,
        trigger: Option<&TriggerSpec>,
        job_name: Option<&str>,
    ) -> Option<DeadLetterSpec> {
        let declared: Vec<&str> = [
            ("url", raw.url.is_some()),
            ("[dead_letter.kafka]", raw.kafka.is_some()),
            ("[dead_letter.amqp]", raw.amqp.is_some()),
        ]
        .into_iter()
        .filter_map(|(what, present)| present.then_some(what))
        .collect();
        if declared.len() > 1 {
            self.error(
                "dead_letter",
                format!(
                    "{} declared; declare one destination: url (NDJSON objects in a store), [dead_letter.kafka] or [dead_letter.amqp]",
                    declared.join(" and ")
                ),
            );
            return None;
        }
        if let Some(url) = &raw.url {
            let url = self.expand("dead_letter.url", url)?;
            return self
                .store_url("dead_letter.url", &url)
                .map(|url| DeadLetterSpec::Store { url });
        }
        if let Some(kafka) = &raw.kafka {
            return self
                .kafka_dead_letter(kafka, trigger, job_name)
                .map(DeadLetterSpec::Kafka);
        }
        if let Some(amqp) = &raw.amqp {
            return self
                .amqp_dead_letter(amqp, trigger)
                .map(DeadLetterSpec::Amqp);
        }
        None
    }

    fn kafka_dead_letter(
        &mut self,
        raw: &RawKafkaDeadLetter,
        trigger: Option<&TriggerSpec>,
        job_name: Option<&str>,
    ) -> Option<KafkaDeadLetterConfig> {
        const BROKERS: &str = "dead_letter.kafka.brokers";
        let kafka_trigger = trigger.and_then(TriggerSpec::config::<KafkaSourceConfig>);
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
                    format!(
                        "invalid topic {}; allowed: {TOPIC_RULE}",
                        super::secret::shown(topic)
                    ),
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

    fn amqp_dead_letter(
        &mut self,
        raw: &RawAmqpDeadLetter,
        trigger: Option<&TriggerSpec>,
    ) -> Option<AmqpDeadLetterConfig> {
        const URL: &str = "dead_letter.amqp.url";
        let amqp_trigger = trigger.and_then(TriggerSpec::config::<AmqpSourceConfig>);
        let url = match (&raw.url, trigger, amqp_trigger) {
            (Some(url), _, _) => self.amqp_url(URL, url),
            (None, _, Some(amqp)) => Some(amqp.url.clone()),
            (None, None, _) => None,
            (None, Some(_), None) => {
                self.error(
                    URL,
                    "required when the trigger is not AMQP, e.g. url = \"amqp://app:${AMQP_PASSWORD}@rabbitmq:5672/%2f\"",
                );
                None
            }
        };
        let declare = raw.declare.unwrap_or(true);
        let queue = match raw.queue.as_deref() {
            None => {
                self.missing("dead_letter.amqp.queue", "queue = \"clicks-dead-letters\"");
                None
            }
            Some(queue) => self.amqp_queue("dead_letter.amqp.queue", queue, declare),
        };
        if let (Some(amqp), Some(queue)) = (amqp_trigger, &queue)
            && amqp.queue == *queue
            && raw.url.is_none()
        {
            self.error(
                "dead_letter.amqp.queue",
                "is the queue the job consumes; dead letters need a queue of their own",
            );
        }
        Some(AmqpDeadLetterConfig {
            url: url?,
            queue: queue?,
            declare,
        })
    }
}
