//! Builds a job's source from its trigger. Validation already produced each connector's
//! configuration (`spec::TriggerSpec`); this file opens what it names.

use sluice_connectors::amqp::AmqpSource;
use sluice_connectors::bucket::feed::NotificationFeed;
use sluice_connectors::bucket::notification::{NoticeFilter, bucket_of_url};
use sluice_connectors::bucket::spool::NoticeSpool;
use sluice_connectors::bucket::{BucketSource, BucketSourceConfig, Discovery};
use sluice_connectors::kafka::KafkaSource;
use sluice_connectors::{Source, SourceError};

use sluice_connectors::RangeLog;
use sluice_connectors::bucket::range::ObjectRangeLog;
use sluice_connectors::kafka::KafkaPartitionLog;

use crate::output::store::{StoreError, open_store};
use crate::spec::{BucketDiscovery, BucketTriggerSpec, JobSpec, NotificationFeedSpec, TriggerSpec};

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

/// The queue whose messages are de-duplicated by `message_id`, when the trigger is AMQP.
pub fn deduplicated_queue(spec: &JobSpec) -> Option<&str> {
    match &spec.trigger {
        TriggerSpec::Amqp(amqp) => Some(&amqp.queue),
        TriggerSpec::Kafka(_) | TriggerSpec::Bucket(_) => None,
    }
}

/// The splits of a job's trigger that can be read again, for the commit protocol and
/// its recovery: a Kafka topic's partitions, a bucket's object versions; `None` for an
/// AMQP queue (at-least-once, duplicates dropped by `message_id`). Opens nothing remote.
pub fn range_log(spec: &JobSpec) -> Result<Option<Box<dyn RangeLog>>, StoreError> {
    Ok(match &spec.trigger {
        TriggerSpec::Kafka(kafka) => Some(Box::new(KafkaPartitionLog::new(kafka.clone()))),
        TriggerSpec::Bucket(bucket) => Some(Box::new(object_range_log(bucket)?)),
        TriggerSpec::Amqp(_) => None,
    })
}

/// A bucket trigger's input objects, for recovery to read lines again.
pub fn object_range_log(bucket: &BucketTriggerSpec) -> Result<ObjectRangeLog, StoreError> {
    let input = open_store(&bucket.url, &bucket.options)?;
    Ok(ObjectRangeLog {
        store: input.store,
        prefix: input.prefix,
        keys_below_prefix: matches!(bucket.discovery, BucketDiscovery::Listing),
        format: bucket.format,
        compression: bucket.compression,
    })
}

/// Connects the job's source. Nothing is consumed until the pipeline asks for events.
/// Run recovery over the job's [`range_log`] first (as [`crate::pipeline::Job::open`]
/// does): a Kafka source joins the group and resumes from its committed offsets, which
/// recovery completes.
pub async fn connect_source(
    spec: &JobSpec,
    options: ConnectOptions,
) -> Result<Box<dyn Source>, SourceError> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => Ok(Box::new(KafkaSource::connect(kafka.clone()).await?)),
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
                            NotificationFeed::Amqp(amqp.as_ref().clone())
                        }
                        NotificationFeedSpec::Kafka(kafka) => {
                            NotificationFeed::Kafka(kafka.as_ref().clone())
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
        TriggerSpec::Amqp(amqp) => Ok(Box::new(AmqpSource::connect(amqp.clone()).await?)),
    }
}

/// The backlog of a job that is not consuming (paused): the lag of its Kafka group, the
/// depth of its AMQP queue; `None` for a bucket trigger, whose backlog only a listing
/// against its cursor would tell.
pub async fn backlog_at_rest(spec: &JobSpec) -> Option<Result<u64, SourceError>> {
    match &spec.trigger {
        TriggerSpec::Kafka(kafka) => Some(sluice_connectors::kafka::lag::group_lag(kafka).await),
        TriggerSpec::Amqp(amqp) => Some(sluice_connectors::amqp::depth::queue_depth(amqp).await),
        TriggerSpec::Bucket(_) => None,
    }
}
