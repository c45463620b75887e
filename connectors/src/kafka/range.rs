//! Reading one offset range of one partition again, and setting a group's committed
//! offsets, without joining the group: what recovery of the exactly-once commit protocol
//! needs from Kafka.
//!
//! [`PartitionLog`] is the small contract of one topic's partitions; every
//! `PartitionLog` is the [`RangeLog`] the platform's recovery uses for a Kafka job.
//! [`KafkaPartitionLog`] implements it with librdkafka, and tests implement it over a
//! `Vec`. Its consumers use `assign` (never `subscribe`), so they are not members of the
//! job's group: reading a range does not disturb the group, and an offset commit is sent
//! as a client outside the group (generation -1), which brokers accept while the group
//! has no active members — recovery runs before the job's own source joins.
//!
//! Threads: librdkafka calls block, so reading runs on a dedicated thread that hands
//! chunks through a bounded channel (cancel-safe for the reader), and offset lookups and
//! commits run in `spawn_blocking`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::config::KafkaSourceConfig;
use super::poll_loop::event_from_message;
use crate::checkpoint::{CheckpointDelta, PositionRange, SplitId};
use crate::event::Event;
use crate::range_log::{RangeLog, partition_ranges};
use crate::source::{Source, SourceError};

/// Most events in one chunk of a range read.
const RANGE_CHUNK_EVENTS: usize = 1000;
/// Chunks buffered between the reading thread and the platform.
const RANGE_CHANNEL_CAPACITY: usize = 4;
/// How long one poll waits; also bounds how late a stop request is seen.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// A range read that makes no progress for this long fails (the broker is unreachable).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of offset lookups and commits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic's partitions as recovery sees them: ranges to read again and the group's
/// committed offsets.
#[async_trait]
pub trait PartitionLog: Send + Sync {
    /// The topic whose partitions these are.
    fn topic(&self) -> &str;

    /// A finite source over the records of `partition` at offsets `range.first..=range.last`,
    /// in offset order. It ends after the record at `range.last`, or at the end of the
    /// partition, whichever comes first; offsets missing inside the range (compaction,
    /// transaction markers) are simply absent. Its `ack` does nothing.
    async fn read_range(
        &self,
        partition: i32,
        range: PositionRange,
    ) -> Result<Box<dyn Source>, SourceError>;

    /// The group's committed offset (the next offset to read) of each of `partitions` that
    /// has one.
    async fn committed_offsets(
        &self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, SourceError>;

    /// Commits `offsets` (partition → next offset to read) for the group, as a client
    /// outside the group.
    async fn commit_offsets(&self, offsets: &BTreeMap<i32, i64>) -> Result<(), SourceError>;
}

/// A topic's partitions as a [`RangeLog`]: its splits are the topic's partitions, and
/// healing commits the group's offsets up to the committed ranges.
#[async_trait]
impl<L: PartitionLog> RangeLog for L {
    fn range_folder(&self) -> String {
        partition_ranges(self.topic())
    }

    async fn read_range(
        &self,
        split: &SplitId,
        range: PositionRange,
    ) -> Result<Box<dyn Source>, SourceError> {
        match split {
            SplitId::Kafka { topic, partition } if **topic == *self.topic() => {
                PartitionLog::read_range(self, *partition, range).await
            }
            _ => Err(SourceError::Internal {
                connector: "kafka",
                message: format!("split {split} is not a partition of topic {}", self.topic()),
            }),
        }
    }

    async fn heal(
        &self,
        latest: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<BTreeMap<SplitId, i64>, SourceError> {
        let latest: BTreeMap<i32, PositionRange> = latest
            .iter()
            .filter_map(|(split, range)| match split {
                SplitId::Kafka { topic, partition } if **topic == *self.topic() => {
                    Some((*partition, *range))
                }
                _ => None,
            })
            .collect();
        if latest.is_empty() {
            return Ok(BTreeMap::new());
        }
        let partitions: Vec<i32> = latest.keys().copied().collect();
        let committed = self.committed_offsets(&partitions).await?;
        let behind: BTreeMap<i32, i64> = latest
            .iter()
            .filter(|(p, range)| committed.get(p).is_none_or(|&c| c <= range.last))
            .map(|(&p, range)| (p, range.last + 1))
            .collect();
        if !behind.is_empty() {
            self.commit_offsets(&behind).await?;
        }
        Ok(behind
            .into_iter()
            .map(|(partition, next)| (SplitId::kafka(self.topic(), partition), next))
            .collect())
    }
}

/// [`PartitionLog`] over a real Kafka topic, with the job's trigger configuration.
#[derive(Debug, Clone)]
pub struct KafkaPartitionLog {
    config: KafkaSourceConfig,
}

impl KafkaPartitionLog {
    pub fn new(config: KafkaSourceConfig) -> Self {
        Self { config }
    }

    /// A consumer of the job's group that only ever uses `assign`. Blocks (librdkafka
    /// starts its threads): call off the async runtime.
    fn consumer(config: &KafkaSourceConfig) -> Result<BaseConsumer, SourceError> {
        let mut client = config.client_config()?;
        client.set("enable.partition.eof", "true");
        client.create().map_err(|error| SourceError::Config {
            connector: "kafka",
            message: format!("cannot create a consumer to read a range again: {error}"),
        })
    }

    fn topic_partitions(&self, offsets: impl Iterator<Item = (i32, Offset)>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            // Adding to a fresh list only fails for an invalid offset value, which
            // `Offset::Offset` never is.
            let _ = list.add_partition_offset(&self.config.topic, partition, offset);
        }
        list
    }
}

fn unavailable(message: String) -> SourceError {
    SourceError::Unavailable {
        connector: "kafka",
        message,
    }
}

fn join_error(error: tokio::task::JoinError) -> SourceError {
    SourceError::Internal {
        connector: "kafka",
        message: format!("kafka request task failed: {error}"),
    }
}

#[async_trait]
impl PartitionLog for KafkaPartitionLog {
    fn topic(&self) -> &str {
        &self.config.topic
    }

    async fn read_range(
        &self,
        partition: i32,
        range: PositionRange,
    ) -> Result<Box<dyn Source>, SourceError> {
        let config = self.config.clone();
        let assignment =
            self.topic_partitions(std::iter::once((partition, Offset::Offset(range.first))));
        // Creating the consumer starts librdkafka's threads: off the runtime.
        let consumer = tokio::task::spawn_blocking(move || {
            let consumer = Self::consumer(&config)?;
            consumer.assign(&assignment).map_err(|error| {
                unavailable(format!(
                    "cannot assign partition {partition} of {}: {error}",
                    config.topic
                ))
            })?;
            Ok::<_, SourceError>(consumer)
        })
        .await
        .map_err(join_error)??;
        let (sender, chunks) = mpsc::channel(RANGE_CHANNEL_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = RangeReader {
            consumer,
            topic: self.config.topic.as_str().into(),
            partition,
            range,
            chunks: sender,
            stop: stop.clone(),
        };
        let thread = thread::Builder::new()
            .name("sluice-kafka-range".into())
            .spawn(move || reader.run())
            .map_err(|error| SourceError::Internal {
                connector: "kafka",
                message: format!("cannot start the range reading thread: {error}"),
            })?;
        Ok(Box::new(RangeSource {
            chunks,
            stop,
            thread: Some(thread),
        }))
    }

    async fn committed_offsets(
        &self,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, SourceError> {
        let config = self.config.clone();
        let list = self.topic_partitions(partitions.iter().map(|&p| (p, Offset::Invalid)));
        // The lookup waits for the broker: off the runtime.
        tokio::task::spawn_blocking(move || {
            let consumer = Self::consumer(&config)?;
            let committed = consumer
                .committed_offsets(list, REQUEST_TIMEOUT)
                .map_err(|error| {
                    unavailable(format!(
                        "cannot read the committed offsets of group {}: {error}",
                        config.group
                    ))
                })?;
            Ok(committed
                .elements_for_topic(&config.topic)
                .iter()
                .filter_map(|element| match element.offset() {
                    Offset::Offset(offset) => Some((element.partition(), offset)),
                    _ => None,
                })
                .collect())
        })
        .await
        .map_err(join_error)?
    }

    async fn commit_offsets(&self, offsets: &BTreeMap<i32, i64>) -> Result<(), SourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let config = self.config.clone();
        let list = self.topic_partitions(offsets.iter().map(|(&p, &o)| (p, Offset::Offset(o))));
        let positions = format!("{offsets:?}");
        // A synchronous commit waits for the broker: off the runtime.
        tokio::task::spawn_blocking(move || {
            let consumer = Self::consumer(&config)?;
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(|error| SourceError::Ack {
                    connector: "kafka",
                    positions,
                    message: format!(
                        "group {} refused an offset commit from outside the group: {error}",
                        config.group
                    ),
                })
        })
        .await
        .map_err(join_error)?
    }
}

type RangeChunk = Result<Vec<Event>, SourceError>;

/// The reading thread's state.
struct RangeReader {
    consumer: BaseConsumer,
    topic: Arc<str>,
    partition: i32,
    range: PositionRange,
    chunks: mpsc::Sender<RangeChunk>,
    stop: Arc<AtomicBool>,
}

impl RangeReader {
    /// Reads until the record at `range.last`, the end of the partition, a stop request
    /// or a stall; then drops the sender, which ends the source.
    fn run(self) {
        let mut chunk = Vec::new();
        let mut last_progress = Instant::now();
        let mut done = false;
        while !done && !self.stop.load(Ordering::Acquire) {
            match self.consumer.poll(POLL_TIMEOUT) {
                None => {}
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let event = event_from_message(&message, &self.topic);
                    let offset = event.origin.position();
                    if offset > self.range.last {
                        done = true;
                    } else if offset >= self.range.first {
                        chunk.push(event);
                        done = offset >= self.range.last;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => done = true,
                Some(Err(error)) => {
                    debug!(topic = &*self.topic, partition = self.partition, %error, "error while reading a range again; librdkafka retries");
                }
            }
            if chunk.len() >= RANGE_CHUNK_EVENTS || (done && !chunk.is_empty()) {
                // Blocking send from this dedicated thread, never from the runtime.
                if self
                    .chunks
                    .blocking_send(Ok(std::mem::take(&mut chunk)))
                    .is_err()
                {
                    return;
                }
            }
            if !done && last_progress.elapsed() > STALL_TIMEOUT {
                warn!(
                    topic = &*self.topic,
                    partition = self.partition,
                    "reading a range again stalled"
                );
                let _ = self.chunks.blocking_send(Err(unavailable(format!(
                    "reading offsets {}..={} of partition {} of {} again made no progress for {STALL_TIMEOUT:?}",
                    self.range.first, self.range.last, self.partition, self.topic
                ))));
                return;
            }
        }
    }
}

/// The finite source a range read is consumed through.
struct RangeSource {
    chunks: mpsc::Receiver<RangeChunk>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[async_trait]
impl Source for RangeSource {
    /// Cancel-safe: a chunk is either returned or stays in the channel.
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        match self.chunks.recv().await {
            Some(Ok(events)) => Ok(Some(events)),
            Some(Err(error)) => Err(error),
            None => Ok(None),
        }
    }

    /// Nothing to do: recovery commits the group's offsets itself once the range is
    /// committed.
    async fn ack(&mut self, _delta: &CheckpointDelta) -> Result<(), SourceError> {
        Ok(())
    }

    async fn close(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.chunks.close();
        if let Some(thread) = self.thread.take() {
            // Joining waits for the thread's last poll and the consumer's close: off the
            // runtime.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for RangeSource {
    /// The thread sees the stop flag (or the closed channel) within one poll and ends on
    /// its own; nothing waits for it here.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
