//! The lag of a job's consumer group on its topic, read without joining the group: the
//! backlog of a job that is not consuming (paused), which its source cannot report.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::config::{KafkaSourceConfig, KafkaStart};
use crate::source::SourceError;

/// Timeout of each broker request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Records between the group's committed offsets and the end of each partition of the
/// topic (a partition without a committed offset counts from where the job would start).
pub async fn group_lag(config: &KafkaSourceConfig) -> Result<u64, SourceError> {
    let config = config.clone();
    // librdkafka blocks: off the runtime.
    tokio::task::spawn_blocking(move || lag_now(&config))
        .await
        .map_err(|error| unavailable(format!("the lag lookup panicked: {error}")))?
}

fn lag_now(config: &KafkaSourceConfig) -> Result<u64, SourceError> {
    let consumer: BaseConsumer = config
        .client_config()?
        .create()
        .map_err(|error| unavailable(format!("cannot create a consumer: {error}")))?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), REQUEST_TIMEOUT)
        .map_err(|error| unavailable(format!("cannot read topic {}: {error}", config.topic)))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|topic| topic.name() == config.topic)
        .flat_map(|topic| topic.partitions().iter().map(|partition| partition.id()))
        .collect();
    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        // Only fails for an invalid offset value, which `Offset::Invalid` is not here.
        let _ = list.add_partition_offset(&config.topic, partition, Offset::Invalid);
    }
    let committed = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(|error| {
            unavailable(format!(
                "cannot read the committed offsets of group {}: {error}",
                config.group
            ))
        })?;
    let mut lag = 0u64;
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&config.topic, partition, REQUEST_TIMEOUT)
            .map_err(|error| {
                unavailable(format!(
                    "cannot read the end of {}/{partition}: {error}",
                    config.topic
                ))
            })?;
        let next = committed
            .find_partition(&config.topic, partition)
            .and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            })
            .unwrap_or(match config.start {
                KafkaStart::Earliest => low,
                KafkaStart::Latest => high,
            });
        lag += u64::try_from(high - next.max(low)).unwrap_or(0);
    }
    Ok(lag)
}

fn unavailable(message: String) -> SourceError {
    SourceError::Unavailable {
        connector: "kafka",
        message,
    }
}
