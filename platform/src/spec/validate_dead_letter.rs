//! The `[dead_letter]` section: one destination — NDJSON objects under a store prefix
//! (`url`), a Kafka topic (`[dead_letter.kafka]`) or an AMQP queue (`[dead_letter.amqp]`).
//!
//! The broker tables mirror the trigger tables (`brokers`, `topic`, `options`; `url`,
//! `queue`, `declare`) and take their broker address from the job's trigger when it is
//! the same kind and none is given. Properties the producer sets itself for durability
//! (acks, idempotence, …) may not be overridden in `options`.

use super::checker::Checker;
use super::raw::{RawAmqpDeadLetter, RawDeadLetter, RawKafkaDeadLetter};
use super::types::{AmqpDeadLetterSpec, DeadLetterSpec, KafkaDeadLetterSpec, TriggerSpec};
use crate::deadletter::kafka::MANAGED_PRODUCER_OPTIONS;
use sluice_connectors::kafka::{TOPIC_RULE, is_topic_name};

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
    ) -> Option<KafkaDeadLetterSpec> {
        const BROKERS: &str = "dead_letter.kafka.brokers";
        let brokers = match (&raw.brokers, trigger) {
            (Some(brokers), _) => self
                .expand(BROKERS, brokers)
                .and_then(|expanded| self.brokers(BROKERS, &expanded)),
            (None, Some(TriggerSpec::Kafka(kafka))) => Some(kafka.brokers.clone()),
            // The trigger has errors of its own, already reported.
            (None, None) => None,
            (None, Some(_)) => {
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
        if let (Some(TriggerSpec::Kafka(kafka)), Some(topic)) = (trigger, &topic)
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
        Some(KafkaDeadLetterSpec {
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
    ) -> Option<AmqpDeadLetterSpec> {
        const URL: &str = "dead_letter.amqp.url";
        let url = match (&raw.url, trigger) {
            (Some(url), _) => self.amqp_url(URL, url),
            (None, Some(TriggerSpec::Amqp(amqp))) => Some(amqp.url.clone()),
            (None, None) => None,
            (None, Some(_)) => {
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
        if let (Some(TriggerSpec::Amqp(amqp)), Some(queue)) = (trigger, &queue)
            && amqp.queue == *queue
            && raw.url.is_none()
        {
            self.error(
                "dead_letter.amqp.queue",
                "is the queue the job consumes; dead letters need a queue of their own",
            );
        }
        Some(AmqpDeadLetterSpec {
            url: url?,
            queue: queue?,
            declare,
        })
    }
}
