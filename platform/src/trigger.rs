//! Builds a job's source from its trigger: the one place that lists every connector.

use sluice_connectors::kafka::{KafkaSource, KafkaSourceConfig, KafkaStart};
use sluice_connectors::{Source, SourceError};

use crate::spec::{JobSpec, KafkaTriggerSpec, StartPosition, TriggerSpec};

/// Connects the job's source. Nothing is consumed until the pipeline asks for events.
/// For a Kafka job, run [`crate::commit::recover`] first: the source joins the group and
/// resumes from its committed offsets, which recovery completes.
pub async fn connect_source(spec: &JobSpec) -> Result<Box<dyn Source>, SourceError> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => Ok(Box::new(
            KafkaSource::connect(kafka_config(spec, kafka)).await?,
        )),
    }
}

/// The Kafka connector's configuration for a job's Kafka trigger.
pub fn kafka_config(spec: &JobSpec, kafka: &KafkaTriggerSpec) -> KafkaSourceConfig {
    KafkaSourceConfig {
        job: spec.name.clone(),
        brokers: kafka.brokers.clone(),
        topic: kafka.topic.clone(),
        group: kafka.group.clone(),
        start: match kafka.start {
            StartPosition::Earliest => KafkaStart::Earliest,
            StartPosition::Latest => KafkaStart::Latest,
        },
        options: kafka.options.clone(),
    }
}
