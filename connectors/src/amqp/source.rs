//! [`AmqpSource`]: one consumer on one queue, behind the [`Source`] contract.
//!
//! Tasks: a background task (see `session`) owns the connection, reconnects, and hands
//! chunks of events to [`Source::next_events`] through a bounded channel. Acks are sent
//! from [`Source::ack`] on the live channel; the bookkeeping that maps positions to
//! delivery tags is shared with the task (see `inflight`). lapin is asynchronous, so
//! nothing here blocks the runtime.
//!
//! Invariants: a delivery is acknowledged only by [`Source::ack`], at most once, and only
//! on the channel it came on; chunks of a channel that was lost before they were handed
//! over are dropped (the broker redelivers their messages), so the platform sees as few
//! duplicates as possible.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::BasicAckOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::AmqpSourceConfig;
use super::inflight::{AckPlan, Planned};
use super::session::{Chunk, SessionTask, Shared, activate, open_session};
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::Event;
use crate::source::{Source, SourceError};

/// Chunks (of up to 1000 events each) buffered between the task and the platform.
const CHUNK_CHANNEL_CAPACITY: usize = 4;
/// How long [`Source::close`] waits for the task to close the session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer on one AMQP queue. See the module docs of [`super`].
pub struct AmqpSource {
    job: Arc<str>,
    queue: Arc<str>,
    split: SplitId,
    shared: Arc<Shared>,
    /// The channel's `prefetch`: the most unacknowledged deliveries the broker sends.
    window: usize,
    chunks: mpsc::Receiver<Chunk>,
    cancel: CancellationToken,
    /// `None` once closed.
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AmqpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource")
            .field("job", &self.job)
            .field("queue", &self.queue)
            .field("closed", &self.task.is_none())
            .field("unacked", &self.shared.inflight().unacked())
            .field("generation", &self.shared.inflight().live_generation())
            .finish_non_exhaustive()
    }
}

impl AmqpSource {
    /// Validates the configuration, connects, declares and binds the queue when
    /// configured, and starts consuming. A first connection that fails is an error
    /// (`Config` for credentials, permissions, a missing queue or exchange; `Unavailable`
    /// when the broker cannot be reached); later losses are ridden out by reconnecting.
    pub async fn connect(config: AmqpSourceConfig) -> Result<AmqpSource, SourceError> {
        let uri = config.broker_uri()?;
        let job: Arc<str> = config.job.as_str().into();
        let queue: Arc<str> = config.queue.as_str().into();
        let shared = Arc::new(Shared::new());
        let session = open_session(&config, &uri, 1).await?;
        activate(&shared, &session);
        info!(
            job = &*job,
            queue = &*queue,
            url = config.redacted_url(),
            declare = config.declare,
            exchange = config.exchange.as_deref().unwrap_or(""),
            routing_keys = ?config.routing_keys,
            prefetch = config.prefetch,
            "amqp source consuming"
        );
        let window = usize::from(config.prefetch);
        let (sender, chunks) = mpsc::channel(CHUNK_CHANNEL_CAPACITY);
        let cancel = CancellationToken::new();
        let task = SessionTask {
            config,
            uri,
            queue: queue.clone(),
            shared: shared.clone(),
            chunks: sender,
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(task.run(session));
        Ok(AmqpSource {
            job,
            split: SplitId::amqp(&queue),
            queue,
            shared,
            window,
            chunks,
            cancel,
            task: Some(task),
        })
    }

    /// Deliveries received and not yet acknowledged (nor lost with their channel).
    pub fn unacked(&self) -> usize {
        self.shared.inflight().unacked()
    }

    /// Replaces the live session as a failed ack does, for tests of that path.
    #[cfg(all(test, feature = "amqp-tests"))]
    pub(super) fn reset_live_session(&self) {
        if let Some(generation) = self.shared.inflight().live_generation() {
            self.shared.request_reset(generation);
        }
    }

    fn ack_error(&self, delta: &CheckpointDelta, message: String) -> SourceError {
        SourceError::Ack {
            connector: "amqp",
            positions: delta.to_string(),
            message,
        }
    }

    /// Sends the acks of `planned` on the live channel. A channel lost meanwhile only
    /// means its deliveries are redelivered: logged, not an error (no retry can help). A
    /// failed send replaces the session, so the broker redelivers what was not acked.
    async fn send_acks(&self, planned: &Planned) {
        let tags: Vec<(u64, bool)> = match &planned.plan {
            AckPlan::Nothing => return,
            AckPlan::Multiple { tag, .. } => vec![(*tag, true)],
            AckPlan::Each(tags) => tags.iter().map(|tag| (*tag, false)).collect(),
        };
        let Some(channel) = self.shared.channel_of(planned.generation) else {
            warn!(
                job = &*self.job,
                queue = &*self.queue,
                generation = planned.generation,
                "amqp channel lost before acknowledging; the broker redelivers those deliveries"
            );
            return;
        };
        for (tag, multiple) in tags {
            if let Err(error) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
                warn!(job = &*self.job, queue = &*self.queue, generation = planned.generation, tag, multiple, %error, "amqp acknowledgement failed; replacing the channel, the broker redelivers those deliveries");
                // Deliveries whose ack was not sent must not stay unacknowledged on a
                // channel that lives on.
                self.shared.request_reset(planned.generation);
                return;
            }
        }
    }
}

#[async_trait]
impl Source for AmqpSource {
    /// Cancel-safe: a chunk is either returned or stays in the channel. Never `Ok(None)`:
    /// a queue does not end. Chunks of a channel lost since they were read are dropped.
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        if self.task.is_none() {
            return Err(SourceError::Internal {
                connector: "amqp",
                message: format!("queue {}: next_events called after close", self.queue),
            });
        }
        loop {
            let Some(chunk) = self.chunks.recv().await else {
                return Err(SourceError::Internal {
                    connector: "amqp",
                    message: format!("queue {}: the consumer task has stopped", self.queue),
                });
            };
            if self.shared.inflight().is_live(chunk.generation) {
                return Ok(Some(chunk.events));
            }
            debug!(
                job = &*self.job,
                queue = &*self.queue,
                generation = chunk.generation,
                events = chunk.events.len(),
                "dropping events of a lost amqp channel; the broker redelivers them"
            );
        }
    }

    /// Acknowledges the deliveries at the positions of `delta` that came on the live
    /// channel (with `multiple` when every earlier delivery of the channel is covered);
    /// positions of a lost channel are skipped, as the broker redelivers them. Returns
    /// once the acks are sent. A split other than this source's queue is an internal
    /// error and nothing is acknowledged.
    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        if delta.is_empty() {
            return Ok(());
        }
        if self.task.is_none() {
            return Err(self.ack_error(delta, "the source is closed".into()));
        }
        let mut range = None;
        for (split, positions) in delta.iter() {
            if *split != self.split {
                return Err(SourceError::Internal {
                    connector: "amqp",
                    message: format!(
                        "cannot acknowledge {split}:{}..={}: not a position of queue {} (nothing acknowledged)",
                        positions.first, positions.last, self.queue
                    ),
                });
            }
            range = Some(*positions);
        }
        let Some(range) = range else {
            return Ok(());
        };
        let planned = self.shared.inflight().plan_ack(range.first, range.last);
        self.send_acks(&planned).await;
        if planned.skipped > 0 {
            info!(job = &*self.job, queue = &*self.queue, positions = %delta, skipped = planned.skipped, "positions of a lost amqp channel were not acknowledged; the broker redelivers them");
        }
        debug!(job = &*self.job, queue = &*self.queue, positions = %delta, plan = ?planned.plan, "amqp deliveries acknowledged");
        Ok(())
    }

    /// Ready messages in the queue (read about once a second) plus this source's own
    /// unacknowledged deliveries; `None` until the queue depth was first read.
    fn backlog(&self) -> Option<u64> {
        self.shared.backlog()
    }

    /// True once the processed positions of this queue in `pending` are half the
    /// prefetch window, or the window is full: the broker sends nothing beyond `prefetch`
    /// unacknowledged deliveries, so waiting for the file age would stall intake.
    fn ack_pressure(&self, pending: &CheckpointDelta) -> bool {
        let covered = pending
            .iter()
            .filter(|(split, _)| **split == self.split)
            .map(|(_, range)| range.last.saturating_sub(range.first).saturating_add(1))
            .sum::<i64>();
        let covered = usize::try_from(covered).unwrap_or(0);
        self.shared.inflight().ack_pressure(self.window, covered)
    }

    /// Cancels the consumer and closes the channels and the connection. Nothing is
    /// acknowledged: the broker requeues every unacknowledged delivery.
    async fn close(&mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        self.cancel.cancel();
        self.chunks.close();
        match tokio::time::timeout(CLOSE_TIMEOUT, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(job = &*self.job, queue = &*self.queue, %error, "the amqp consumer task failed");
            }
            Err(_) => {
                warn!(
                    job = &*self.job,
                    queue = &*self.queue,
                    "closing the amqp source timed out; abandoning the connection"
                );
                task.abort();
            }
        }
        self.shared.inflight().clear();
        info!(job = &*self.job, queue = &*self.queue, "amqp source closed");
    }
}

impl Drop for AmqpSource {
    /// Tells the task to close the session; it does so on its own, on the runtime.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
