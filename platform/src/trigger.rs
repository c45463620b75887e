//! Builds a job's source from its trigger: the one place that lists every connector.

use sluice_connectors::amqp::{AmqpSource, AmqpSourceConfig};
use sluice_connectors::bucket::feed::NotificationFeed;
use sluice_connectors::bucket::notification::{NoticeFilter, bucket_of_url};
use sluice_connectors::bucket::spool::NoticeSpool;
use sluice_connectors::bucket::{BucketSource, BucketSourceConfig, Discovery};
use sluice_connectors::kafka::{KafkaSource, KafkaSourceConfig, KafkaStart};
use sluice_connectors::{Source, SourceError};

use sluice_connectors::kafka::KafkaPartitionLog;

use crate::commit::{
    ObjectInput, RecoveryError, RecoveryReport, recover_objects, recover_partitions,
};
use crate::deadletter::dead_letter_location;
use crate::output::store::{StoreError, open_store};
use crate::spec::{
    AmqpTriggerSpec, BucketDiscovery, BucketTriggerSpec, JobSpec, KafkaTriggerSpec,
    NotificationFeedSpec, StartPosition, TriggerSpec,
};

/// Where a bucket trigger keeps its cursor, relative to the job's output.
pub const BUCKET_CURSOR: &str = "_sluice/bucket/cursor.json";
/// Where a bucket trigger in notification mode keeps accepted notifications.
pub const BUCKET_NOTICES: &str = "_sluice/bucket/notices";

/// How the source should behave beyond what the job declares.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// A bucket source ends once a listing finds nothing new (one-shot runs); broker
    /// sources ignore it.
    pub stop_when_idle: bool,
}

/// The Kafka topic a job reads, when its trigger is Kafka: the topic whose partitions
/// the commit protocol names its ranges after.
pub fn kafka_topic(spec: &JobSpec) -> Option<&str> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => Some(&kafka.topic),
        TriggerSpec::Amqp(_) | TriggerSpec::Bucket(_) => None,
    }
}

/// The queue whose messages are de-duplicated by `message_id`, when the trigger is AMQP.
pub fn deduplicated_queue(spec: &JobSpec) -> Option<&str> {
    match &spec.trigger {
        TriggerSpec::Amqp(amqp) => Some(&amqp.queue),
        TriggerSpec::Kafka(_) | TriggerSpec::Bucket(_) => None,
    }
}

/// Recovers a job's output before its source connects: the recovery its trigger needs
/// (Kafka partitions, object versions; AMQP queues have nothing to recover).
pub async fn recover(spec: &JobSpec) -> Result<RecoveryReport, RecoveryError> {
    let output = || -> Result<_, StoreError> {
        let output = open_store(&spec.output.url, &spec.output.options)?;
        let dead_letters = dead_letter_location(spec, &output)?;
        Ok((output, dead_letters))
    };
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => {
            let (output, dead_letters) = output()?;
            let log = KafkaPartitionLog::new(kafka_config(spec, kafka));
            recover_partitions(spec, &kafka.topic, output, dead_letters, &log).await
        }
        TriggerSpec::Bucket(bucket) => {
            let (output, dead_letters) = output()?;
            recover_objects(spec, &object_input(bucket)?, output, dead_letters).await
        }
        TriggerSpec::Amqp(_) => Ok(RecoveryReport::default()),
    }
}

/// Where a bucket trigger's input objects are, for recovery to read lines again.
pub fn object_input(bucket: &BucketTriggerSpec) -> Result<ObjectInput, StoreError> {
    Ok(ObjectInput {
        store: open_store(&bucket.url, &bucket.options)?,
        keys_below_prefix: matches!(bucket.discovery, BucketDiscovery::Listing),
        format: bucket.format,
        compression: bucket.compression,
    })
}

/// Connects the job's source. Nothing is consumed until the pipeline asks for events.
/// For a Kafka job, run [`recover`] first (as [`crate::pipeline::Job::open`]
/// does): the source joins the group and resumes from its committed offsets, which
/// recovery completes.
pub async fn connect_source(
    spec: &JobSpec,
    options: ConnectOptions,
) -> Result<Box<dyn Source>, SourceError> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => Ok(Box::new(
            KafkaSource::connect(kafka_config(spec, kafka)).await?,
        )),
        TriggerSpec::Bucket(bucket) => {
            let config_error = |message: String| SourceError::Config {
                connector: "bucket",
                message,
            };
            let input = open_store(&bucket.url, &bucket.options)
                .map_err(|e| config_error(format!("input {}: {e}", bucket.url)))?;
            let output = open_store(&spec.output.url, &spec.output.options)
                .map_err(|e| config_error(format!("output {}: {e}", spec.output.url)))?;
            let cursor_path = output
                .object_path(BUCKET_CURSOR)
                .map_err(|e| config_error(format!("cursor path: {e}")))?;
            let discovery = match &bucket.discovery {
                BucketDiscovery::Listing => Discovery::Listing {
                    poll_interval: bucket.poll_interval,
                },
                BucketDiscovery::Notifications {
                    feed,
                    events,
                    prefix,
                    suffix,
                } => Discovery::Notifications {
                    feed: Box::new(match feed {
                        NotificationFeedSpec::Webhook { listen, token } => {
                            NotificationFeed::Webhook {
                                listen: *listen,
                                token: token.as_ref().map(|token| {
                                    sluice_connectors::bucket::webhook::WebhookToken::new(
                                        token.expose(),
                                    )
                                }),
                            }
                        }
                        NotificationFeedSpec::Amqp(amqp) => {
                            NotificationFeed::Amqp(amqp_config(spec, amqp))
                        }
                        NotificationFeedSpec::Kafka(kafka) => {
                            NotificationFeed::Kafka(kafka_config(spec, kafka))
                        }
                    }),
                    filter: NoticeFilter {
                        events: events.clone(),
                        prefix: prefix.clone(),
                        suffix: suffix.clone(),
                        bucket: bucket_of_url(&bucket.url),
                    },
                    spool: NoticeSpool::new(
                        output.store.clone(),
                        output
                            .object_path(BUCKET_NOTICES)
                            .map_err(|e| config_error(format!("notification spool path: {e}")))?,
                    ),
                },
            };
            let config = BucketSourceConfig {
                job: spec.name.clone(),
                input_store: input.store,
                input_prefix: input.prefix,
                input_url: input.url,
                cursor_store: output.store,
                cursor_path,
                format: bucket.format,
                compression: bucket.compression,
                discovery,
                stop_when_idle: options.stop_when_idle,
                missing_timeout: bucket.missing_timeout,
            };
            Ok(Box::new(BucketSource::connect(config).await?))
        }
        TriggerSpec::Amqp(amqp) => Ok(Box::new(
            AmqpSource::connect(amqp_config(spec, amqp)).await?,
        )),
    }
}

/// The backlog of a job that is not consuming (paused): the lag of its Kafka group, the
/// depth of its AMQP queue; `None` for a bucket trigger, whose backlog only a listing
/// against its cursor would tell.
pub async fn backlog_at_rest(spec: &JobSpec) -> Option<Result<u64, SourceError>> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => {
            Some(sluice_connectors::kafka::lag::group_lag(&kafka_config(spec, kafka)).await)
        }
        TriggerSpec::Amqp(amqp) => {
            Some(sluice_connectors::amqp::depth::queue_depth(&amqp_config(spec, amqp)).await)
        }
        TriggerSpec::Bucket(_) => None,
    }
}

/// The AMQP connector's configuration for a job's AMQP trigger (or the queue its bucket
/// notifications arrive on).
pub fn amqp_config(spec: &JobSpec, amqp: &AmqpTriggerSpec) -> AmqpSourceConfig {
    let mut config = AmqpSourceConfig::new(&spec.name, &amqp.url, &amqp.queue);
    config.declare = amqp.declare;
    config.exchange = amqp.exchange.clone();
    config.routing_keys = amqp.routing_keys.clone();
    config.prefetch = amqp.prefetch;
    config
}

/// The Kafka connector's configuration for a job's Kafka trigger (or the topic its bucket
/// notifications arrive on).
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
