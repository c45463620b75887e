//! [`KafkaSource`]: one consumer-group member on one topic, behind the [`Source`] contract.
//!
//! Threads: librdkafka's consumer is polled by a dedicated thread (see `poll_loop`), which
//! hands chunks of events to [`Source::next_events`] through a bounded channel. Commits
//! and closing the consumer block on the broker, so they run in `spawn_blocking` (or, on
//! drop, on a short-lived thread); nothing here blocks the async runtime.
//!
//! Invariants: offsets are committed only by [`Source::ack`], as `last + 1` of each
//! acknowledged range (Kafka stores the next offset to read); the consumer handle is
//! shared by the poll thread and in-flight commits, and the consumer is closed (its
//! partitions revoked, the group left) when the last handle is dropped, off the runtime.

use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::config::KafkaSourceConfig;
use super::context::{KafkaConsumer, KafkaConsumerContext, SourceState};
use super::poll_loop::{ChunkResult, PollLoop};
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::Event;
use crate::source::{Source, SourceError};

/// Chunks (of up to 1000 events or 1 MiB each) buffered between the poll thread and the
/// platform.
const CHUNK_CHANNEL_CAPACITY: usize = 8;

/// A Kafka consumer-group member on one topic. See the module docs of [`super`].
pub struct KafkaSource {
    job: Arc<str>,
    topic: Arc<str>,
    /// `None` once closed.
    consumer: Option<Arc<KafkaConsumer>>,
    chunks: mpsc::Receiver<ChunkResult>,
    state: Arc<SourceState>,
    /// `None` once closed.
    poll_thread: Option<JoinHandle<()>>,
    /// Wakes the poll thread when it waits for room in the channel.
    poll_thread_waker: Thread,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("job", &self.job)
            .field("topic", &self.topic)
            .field("closed", &self.consumer.is_none())
            .field("assigned_partitions", &self.state.assigned_partitions())
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer, subscribes to the topic and starts the poll thread. Joining
    /// the group and fetching happen in the background; problems reaching the brokers
    /// surface as logs, and fatal ones through [`Source::next_events`].
    pub async fn connect(config: KafkaSourceConfig) -> Result<KafkaSource, SourceError> {
        let client_config = config.client_config()?;
        let job: Arc<str> = config.job.as_str().into();
        let topic: Arc<str> = config.topic.as_str().into();
        let state = Arc::new(SourceState::new());
        let context =
            KafkaConsumerContext::new(job.clone(), topic.clone(), config.start, state.clone());

        // Creating the client starts librdkafka's threads, and dropping a consumer that
        // failed to subscribe waits for it to close: both off the runtime.
        let subscribe_topic = topic.clone();
        let consumer = tokio::task::spawn_blocking(move || {
            let consumer: KafkaConsumer = client_config
                .create_with_context(context)
                .map_err(|error| creation_error(&error))?;
            consumer
                .subscribe(&[&subscribe_topic])
                .map_err(|error| SourceError::Config {
                    connector: "kafka",
                    message: format!("cannot subscribe to topic {subscribe_topic}: {error}"),
                })?;
            Ok::<_, SourceError>(Arc::new(consumer))
        })
        .await
        .map_err(|error| SourceError::Internal {
            connector: "kafka",
            message: format!("consumer creation task failed: {error}"),
        })??;

        let (sender, chunks) = mpsc::channel(CHUNK_CHANNEL_CAPACITY);
        let poll_loop = PollLoop::new(
            consumer.clone(),
            sender,
            state.clone(),
            job.clone(),
            topic.clone(),
        );
        let poll_thread = match poll_loop.spawn() {
            Ok(handle) => handle,
            Err(error) => {
                // Closing the consumer blocks: let a blocking task drop the last handle.
                tokio::task::spawn_blocking(move || drop(consumer));
                return Err(SourceError::Internal {
                    connector: "kafka",
                    message: format!("cannot start the kafka poll thread: {error}"),
                });
            }
        };
        info!(
            job = &*job,
            topic = &*topic,
            group = config.group,
            brokers = config.brokers,
            start = %config.start,
            "kafka source subscribed"
        );
        Ok(KafkaSource {
            job,
            topic,
            consumer: Some(consumer),
            chunks,
            state,
            poll_thread_waker: poll_thread.thread().clone(),
            poll_thread: Some(poll_thread),
        })
    }

    /// Partitions of the topic currently assigned to this member, ascending. Changes on
    /// every rebalance; empty before the first assignment and after close.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        self.state.assigned_partitions()
    }

    /// A handle that dies once the poll thread has ended and the consumer is destroyed
    /// (both hold the state), for tests of closing and dropping.
    #[cfg(test)]
    pub(super) fn state_watch(&self) -> std::sync::Weak<SourceState> {
        Arc::downgrade(&self.state)
    }

    /// The commit request for `delta`: offset `last + 1` per partition.
    fn offsets_to_commit(
        &self,
        delta: &CheckpointDelta,
    ) -> Result<TopicPartitionList, SourceError> {
        let mut offsets = TopicPartitionList::with_capacity(delta.iter().count());
        for (split, range) in delta.iter() {
            let partition = match split {
                SplitId::Kafka { topic, partition } if *topic == self.topic && range.last >= 0 => {
                    *partition
                }
                _ => {
                    return Err(SourceError::Internal {
                        connector: "kafka",
                        message: format!(
                            "cannot acknowledge {split}:{}..={}: not an offset of topic {} (nothing committed)",
                            range.first, range.last, self.topic
                        ),
                    });
                }
            };
            offsets
                .add_partition_offset(&self.topic, partition, Offset::Offset(range.last + 1))
                .map_err(|error| self.ack_error(delta, &error.to_string()))?;
        }
        Ok(offsets)
    }

    fn ack_error(&self, delta: &CheckpointDelta, message: &str) -> SourceError {
        SourceError::Ack {
            connector: "kafka",
            positions: delta.to_string(),
            message: message.to_owned(),
        }
    }

    /// Tells the poll thread to finish and wakes it; idempotent.
    fn signal_stop(&mut self) {
        self.state.request_stop();
        // A poll thread waiting for room sees the closed channel at once.
        self.chunks.close();
        self.poll_thread_waker.unpark();
    }
}

#[async_trait]
impl Source for KafkaSource {
    /// Cancel-safe: a chunk is either returned or stays in the channel. Never `Ok(None)`:
    /// a topic does not end.
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        if self.consumer.is_none() {
            return Err(SourceError::Internal {
                connector: "kafka",
                message: format!("topic {}: next_events called after close", self.topic),
            });
        }
        let received = self.chunks.recv().await;
        // There is room in the channel again; a waiting poll thread can go on.
        self.poll_thread_waker.unpark();
        match received {
            Some(Ok(events)) => Ok(Some(events)),
            Some(Err(error)) => Err(error),
            None => Err(SourceError::Unavailable {
                connector: "kafka",
                message: format!(
                    "topic {}: the consumer has stopped (after the fatal error reported before); reconnect the source",
                    self.topic
                ),
            }),
        }
    }

    /// Commits `last + 1` for every partition of `delta`, synchronously (the broker has
    /// stored the offsets when this returns `Ok`). A split that is not a partition of this
    /// source's topic is an internal error and nothing is committed. On error nothing is
    /// known to be committed: the positions may be delivered again after a restart.
    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        if delta.is_empty() {
            return Ok(());
        }
        let offsets = self.offsets_to_commit(delta)?;
        let Some(consumer) = self.consumer.clone() else {
            return Err(self.ack_error(delta, "the source is closed"));
        };
        // A synchronous commit waits for the broker's answer: off the runtime.
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => {
                debug!(job = &*self.job, topic = &*self.topic, positions = %delta, "kafka offsets committed");
                Ok(())
            }
            Ok(Err(error)) => Err(self.ack_error(delta, &format!("{error} (retrying may help)"))),
            Err(error) => Err(self.ack_error(delta, &format!("commit task failed: {error}"))),
        }
    }

    /// Messages of the assigned partitions not yet committed by the group, from the last
    /// librdkafka statistics (every `statistics.interval.ms`); `None` until the first ones
    /// that know a high watermark.
    fn backlog(&self) -> Option<u64> {
        self.state.backlog()
    }

    /// Stops the poll thread, then closes the consumer: librdkafka revokes the assignment
    /// and leaves the group, so other members take the partitions over at once. Nothing is
    /// committed; unacknowledged positions are delivered again to the group.
    async fn close(&mut self) {
        self.signal_stop();
        let poll_thread = self.poll_thread.take();
        let consumer = self.consumer.take();
        if poll_thread.is_none() && consumer.is_none() {
            return;
        }
        let (job, topic) = (self.job.clone(), self.topic.clone());
        // Joining the thread and closing the consumer wait on librdkafka: off the runtime.
        let closed = tokio::task::spawn_blocking(move || {
            finish(poll_thread, consumer, &job, &topic);
        })
        .await;
        match closed {
            Ok(()) => info!(
                job = &*self.job,
                topic = &*self.topic,
                "kafka source closed"
            ),
            Err(error) => {
                warn!(job = &*self.job, topic = &*self.topic, %error, "closing the kafka source failed")
            }
        }
    }
}

impl Drop for KafkaSource {
    /// Stops the poll thread without waiting: a short-lived thread joins it and closes the
    /// consumer, since a drop may happen on the async runtime.
    fn drop(&mut self) {
        let poll_thread = self.poll_thread.take();
        let consumer = self.consumer.take();
        if poll_thread.is_none() && consumer.is_none() {
            return;
        }
        self.signal_stop();
        let (job, topic) = (self.job.clone(), self.topic.clone());
        let spawned = thread::Builder::new()
            .name("sluice-kafka-close".into())
            .spawn(move || finish(poll_thread, consumer, &job, &topic));
        if let Err(error) = spawned {
            // The poll thread still stops on its own; the consumer is closed when its last
            // handle goes.
            warn!(job = &*self.job, topic = &*self.topic, %error, "cannot start a thread to close the kafka consumer");
        }
    }
}

/// Joins the poll thread, then drops this handle on the consumer. When it is the last one
/// (no abandoned commit still running), dropping closes the consumer and leaves the group.
/// Blocks: call off the async runtime.
fn finish(
    poll_thread: Option<JoinHandle<()>>,
    consumer: Option<Arc<KafkaConsumer>>,
    job: &str,
    topic: &str,
) {
    if let Some(poll_thread) = poll_thread
        && poll_thread.join().is_err()
    {
        warn!(job, topic, "kafka poll thread panicked");
    }
    if let Some(consumer) = consumer {
        if Arc::strong_count(&consumer) > 1 {
            debug!(
                job,
                topic, "a commit is still running; the consumer closes when it ends"
            );
        }
        drop(consumer);
    }
}

fn creation_error(error: &KafkaError) -> SourceError {
    SourceError::Config {
        connector: "kafka",
        message: format!("cannot create the consumer: {error}"),
    }
}
