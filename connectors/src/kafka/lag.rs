//! The lag of a job's consumer group on its topic, read without joining the group: the
//! backlog of a job that is not consuming (paused), which its source cannot report.
//!
//! The end of each partition is the high watermark of a fetch response (a consumer
//! outside the group assigns the partitions at the group's positions and reads until
//! each answered once), not a ListOffsets request: some brokers answer that one wrongly,
//! while fetch responses are what a consumer's own lag is computed from. A partition
//! that gives no fetch response in time falls back to ListOffsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::config::{KafkaSourceConfig, KafkaStart};
use crate::source::SourceError;

/// The high watermark of each partition of one topic, from librdkafka's statistics
/// (`hi_offset`, carried by fetch responses), with the time of the report.
struct HighWatermarks {
    topic: String,
    reported: Mutex<(BTreeMap<i32, i64>, Option<Instant>)>,
}

impl ClientContext for HighWatermarks {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(statistics) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let partitions = &statistics["topics"][self.topic.as_str()]["partitions"];
        let Some(partitions) = partitions.as_object() else {
            return;
        };
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        for partition in partitions.values() {
            if let (Some(id), Some(high)) = (
                partition["partition"]
                    .as_i64()
                    .and_then(|id| i32::try_from(id).ok()),
                partition["hi_offset"].as_i64(),
            ) && id >= 0
                && high >= 0
            {
                reported.0.insert(id, high);
            }
        }
        reported.1 = Some(Instant::now());
    }
}

impl ConsumerContext for HighWatermarks {}

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
    let mut client = config.client_config()?;
    // Only a little is fetched: one answer per partition is all this needs.
    client
        .set("enable.partition.eof", "true")
        .set("queued.min.messages", "1")
        .set("fetch.message.max.bytes", "65536")
        .set("fetch.wait.max.ms", "100")
        .set("statistics.interval.ms", "100");
    let context = HighWatermarks {
        topic: config.topic.clone(),
        reported: Mutex::default(),
    };
    let consumer: BaseConsumer<HighWatermarks> = client
        .create_with_context(context)
        .map_err(|error| unavailable(format!("cannot create a consumer: {error}")))?;
    let topic = config.topic.as_str();
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|error| unavailable(format!("cannot read topic {topic}: {error}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic)
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
        .collect();
    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        // Only fails for an invalid offset value, which `Offset::Invalid` is not here.
        let _ = list.add_partition_offset(topic, partition, Offset::Invalid);
    }
    let committed = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(|error| {
            unavailable(format!(
                "cannot read the committed offsets of group {}: {error}",
                config.group
            ))
        })?;
    // Where the group would read next; `None`: nowhere yet (a new group starting at the
    // end has no lag there).
    let mut next: BTreeMap<i32, Option<i64>> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        let committed =
            committed
                .find_partition(topic, partition)
                .and_then(|element| match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
        let from = match (committed, config.start) {
            (Some(offset), _) => Offset::Offset(offset),
            (None, KafkaStart::Earliest) => Offset::Beginning,
            (None, KafkaStart::Latest) => {
                next.insert(partition, None);
                continue;
            }
        };
        next.insert(partition, committed);
        let _ = assignment.add_partition_offset(topic, partition, from);
    }
    let (answered, highs) = fetch_once(&consumer, &assignment, &mut next)?;
    let mut lag = 0u64;
    for (partition, next) in next {
        let Some(next) = next else { continue };
        let fetched = answered
            .contains(&partition)
            .then(|| highs.get(&partition).copied())
            .flatten();
        let high = match fetched {
            Some(high) => high,
            None => {
                consumer
                    .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                    .map_err(|error| {
                        unavailable(format!(
                            "cannot read the end of {topic}/{partition}: {error}"
                        ))
                    })?
                    .1
            }
        };
        lag += u64::try_from(high - next).unwrap_or(0);
    }
    Ok(lag)
}

/// Reads the assigned partitions until each gave a fetch response (a record or its end),
/// at most [`REQUEST_TIMEOUT`]; a partition without a committed offset takes the offset of
/// its first record as where the group would start. Returns the partitions that answered.
fn fetch_once(
    consumer: &BaseConsumer<HighWatermarks>,
    assignment: &TopicPartitionList,
    next: &mut BTreeMap<i32, Option<i64>>,
) -> Result<(BTreeSet<i32>, BTreeMap<i32, i64>), SourceError> {
    let mut answered = BTreeSet::new();
    let wanted = assignment.count();
    if wanted == 0 {
        return Ok((answered, BTreeMap::new()));
    }
    consumer
        .assign(assignment)
        .map_err(|error| unavailable(format!("cannot assign the partitions: {error}")))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while answered.len() < wanted && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                if answered.insert(partition) {
                    let start = next.entry(partition).or_insert(None);
                    start.get_or_insert(message.offset());
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                answered.insert(partition);
            }
            Some(Err(_)) | None => {}
        }
    }
    // The statistics reported after the last answer carry every answered partition's end.
    let answered_at = Instant::now();
    loop {
        let reported = consumer
            .context()
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let complete = answered
            .iter()
            .all(|partition| reported.0.contains_key(partition));
        if (reported.1.is_some_and(|at| at > answered_at) && complete) || Instant::now() >= deadline
        {
            // A partition at its end that the group has no position in: no lag there.
            for partition in &answered {
                if let (Some(start), Some(high)) =
                    (next.get_mut(partition), reported.0.get(partition))
                {
                    start.get_or_insert(*high);
                }
            }
            return Ok((answered, reported.0));
        }
        let _ = consumer.poll(Duration::from_millis(50));
    }
}

fn unavailable(message: String) -> SourceError {
    SourceError::Unavailable {
        connector: "kafka",
        message,
    }
}
