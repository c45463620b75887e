//! Builds a job's source from its trigger: the one place that lists every connector.

use sluice_connectors::amqp::{AmqpSource, AmqpSourceConfig};
use sluice_connectors::kafka::{KafkaSource, KafkaSourceConfig, KafkaStart};
use sluice_connectors::{Source, SourceError};

use crate::spec::{JobSpec, StartPosition, TriggerSpec};

/// Connects the job's source. Nothing is consumed until the pipeline asks for events.
pub async fn connect_source(spec: &JobSpec) -> Result<Box<dyn Source>, SourceError> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => {
            let config = KafkaSourceConfig {
                job: spec.name.clone(),
                brokers: kafka.brokers.clone(),
                topic: kafka.topic.clone(),
                group: kafka.group.clone(),
                start: match kafka.start {
                    StartPosition::Earliest => KafkaStart::Earliest,
                    StartPosition::Latest => KafkaStart::Latest,
                },
                options: kafka.options.clone(),
            };
            Ok(Box::new(KafkaSource::connect(config).await?))
        }
        TriggerSpec::Amqp(amqp) => {
            let mut config = AmqpSourceConfig::new(&spec.name, &amqp.url, &amqp.queue);
            config.declare = amqp.declare;
            config.exchange = amqp.exchange.clone();
            config.routing_keys = amqp.routing_keys.clone();
            config.prefetch = amqp.prefetch;
            Ok(Box::new(AmqpSource::connect(config).await?))
        }
    }
}
