//! The dedicated thread that polls librdkafka and hands chunks of events to the source.
//!
//! librdkafka's poll blocks and runs the consumer's callbacks (rebalances, statistics,
//! logs), so it runs on its own thread, never on the async runtime. The thread:
//!
//! 1. polls with a short timeout, then gathers what is immediately available into a chunk
//!    of at most [`MAX_CHUNK_EVENTS`] events or about [`MAX_CHUNK_BYTES`] bytes, copied
//!    into one buffer per partition (`chunk`);
//! 2. sends the chunk through a bounded channel; memory is bounded by the channel's
//!    capacity in chunks plus librdkafka's own prefetch queue;
//! 3. while the channel stays full it pauses the assigned partitions and keeps serving
//!    librdkafka's events, so rebalances, statistics (the backlog) and the group's
//!    liveness (`max.poll.interval.ms`) keep working while the platform is busy; it resumes
//!    once a chunk is taken;
//! 4. stops when told to (stop flag, closed channel) and drops its consumer handle.
//!
//! Invariants: within a partition, events are sent in offset order and none is dropped —
//! a message polled while waiting is kept (dropping one would let a later ack skip it).
//! Errors librdkafka recovers from are only logged (by the consumer context); fatal errors
//! and errors retrying cannot fix (authorization) are sent through the channel.

use std::mem;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, warn};

use super::chunk::ChunkBuilder;
use super::context::{KafkaConsumer, SourceState};
use crate::event::Event;
use crate::source::SourceError;

/// Most events in one chunk.
pub(super) const MAX_CHUNK_EVENTS: usize = 1000;
/// A chunk is closed once its events reach this many bytes.
pub(super) const MAX_CHUNK_BYTES: usize = 1 << 20;
/// How long one poll waits for a message; also bounds how late the stop flag is seen.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the channel may stay full before the partitions are paused. Pausing drops
/// what librdkafka prefetched (fetched again on resume), so it is for a platform that has
/// stopped taking events (a commit waiting out an outage), not for the ordinary rhythm of
/// a busy pipeline, which takes a few chunks each time a batch starts.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// librdkafka events served per wake-up while the channel is full.
const EVENTS_PER_WAKE: usize = 4;

/// What the thread sends: a chunk of events, or an error the platform must see.
pub(super) type ChunkResult = Result<Vec<Event>, SourceError>;

/// An error the platform must see; `fatal` ends the thread after it is sent.
struct PollFailure {
    error: SourceError,
    fatal: bool,
}

pub(super) struct PollLoop {
    consumer: Arc<KafkaConsumer>,
    chunks: mpsc::Sender<ChunkResult>,
    state: Arc<SourceState>,
    job: Arc<str>,
    topic: Arc<str>,
    /// Whether this loop paused the assignment because the channel stayed full.
    paused: bool,
    /// Messages polled while waiting for room in the channel; sent before polling more.
    spill: Vec<Event>,
    /// An error met while waiting for room in the channel; sent after the spill.
    deferred_failure: Option<PollFailure>,
    /// What has been handed to the platform, to drop redeliveries after a rebalance.
    handed_over: HandedOver,
}

/// Per partition, the offset after the last message handed to the platform.
///
/// After a rebalance gives back a partition this consumer already read from, librdkafka
/// fetches again from the group's committed offset, which trails what the platform holds
/// in flight. Those messages are already in the pipeline and will be committed by it (or
/// the job fails and everything uncommitted is redelivered on restart), so handing them
/// over again would only duplicate output — and would move positions backwards, which
/// the platform rightly refuses. They are dropped here; nothing past what was handed over
/// is ever dropped.
#[derive(Debug, Default)]
pub(super) struct HandedOver {
    next: std::collections::HashMap<i32, i64>,
}

impl HandedOver {
    /// True when `offset` of `partition` has not been handed over yet; records it.
    pub(super) fn admit(&mut self, partition: i32, offset: i64) -> bool {
        let next = self.next.entry(partition).or_insert(i64::MIN);
        if offset < *next {
            return false;
        }
        *next = offset + 1;
        true
    }
}

impl PollLoop {
    pub(super) fn new(
        consumer: Arc<KafkaConsumer>,
        chunks: mpsc::Sender<ChunkResult>,
        state: Arc<SourceState>,
        job: Arc<str>,
        topic: Arc<str>,
    ) -> Self {
        Self {
            consumer,
            chunks,
            state,
            job,
            topic,
            paused: false,
            spill: Vec::new(),
            deferred_failure: None,
            handed_over: HandedOver::default(),
        }
    }

    /// Starts the thread. The source wakes it (`Thread::unpark`) whenever it takes a chunk.
    pub(super) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("sluice-kafka".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        debug!(
            job = &*self.job,
            topic = &*self.topic,
            "kafka poll thread started"
        );
        while !self.state.stop_requested() {
            let (events, failure) = if self.spill.is_empty() && self.deferred_failure.is_none() {
                self.poll_chunk()
            } else {
                (mem::take(&mut self.spill), self.deferred_failure.take())
            };
            if !events.is_empty() && !self.deliver(Ok(events)) {
                break;
            }
            if let Some(PollFailure { error, fatal }) = failure
                && (!self.deliver(Err(error)) || fatal)
            {
                break;
            }
        }
        debug!(
            job = &*self.job,
            topic = &*self.topic,
            "kafka poll thread stopped"
        );
        // Dropping `self` drops this thread's consumer handle and the channel's sender.
    }

    /// Polls until a first message arrives (or the timeout), then takes what is already
    /// fetched, up to the chunk limits.
    fn poll_chunk(&mut self) -> (Vec<Event>, Option<PollFailure>) {
        let mut chunk = ChunkBuilder::default();
        let mut timeout = POLL_TIMEOUT;
        while chunk.len() < MAX_CHUNK_EVENTS && chunk.bytes() < MAX_CHUNK_BYTES {
            match self.consumer.poll(timeout) {
                // Nothing fetched, or librdkafka served an event (rebalance, statistics).
                None => break,
                Some(Ok(message)) => {
                    if !self
                        .handed_over
                        .admit(message.partition(), message.offset())
                    {
                        debug!(
                            job = &*self.job,
                            topic = &*self.topic,
                            partition = message.partition(),
                            offset = message.offset(),
                            "dropping a redelivered message already handed to the platform"
                        );
                        timeout = Duration::ZERO;
                        continue;
                    }
                    chunk.push(&message, &self.topic);
                }
                Some(Err(error)) => {
                    if let Some(failure) = self.classify(error) {
                        return (chunk.finish(), Some(failure));
                    }
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        (chunk.finish(), None)
    }

    /// Sends one item, waiting for room. Returns false when the source is gone or stopping.
    fn deliver(&mut self, item: ChunkResult) -> bool {
        let mut item = item;
        let full_since = Instant::now();
        loop {
            match self.chunks.try_send(item) {
                Ok(()) => {
                    self.resume_if_paused();
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(returned)) => item = returned,
            }
            if self.state.stop_requested() {
                return false;
            }
            // The source unparks this thread each time it takes a chunk.
            thread::park_timeout(POLL_TIMEOUT);
            if full_since.elapsed() >= PAUSE_AFTER {
                self.serve_events_while_full();
            }
        }
    }

    /// Keeps the consumer alive in its group while the channel is full: pauses the
    /// assignment (librdkafka drops what it prefetched and refetches from the last message
    /// handed over on resume) and serves queued rebalances, statistics and errors.
    fn serve_events_while_full(&mut self) {
        if !self.paused {
            self.pause_assignment();
        }
        for _ in 0..EVENTS_PER_WAKE {
            match self.consumer.poll(Duration::ZERO) {
                None => {}
                // A partition assigned by a rebalance while paused is not paused yet: keep
                // its message, pause the new assignment.
                Some(Ok(message)) => {
                    self.spill.push(event_from_message(&message, &self.topic));
                    self.pause_assignment();
                }
                Some(Err(error)) => {
                    if let Some(failure) = self.classify(error) {
                        self.deferred_failure.get_or_insert(failure);
                    }
                }
            }
        }
    }

    fn pause_assignment(&mut self) {
        let result = self
            .consumer
            .assignment()
            .and_then(|assignment| self.consumer.pause(&assignment));
        match result {
            Ok(()) => {
                self.paused = true;
                debug!(
                    job = &*self.job,
                    topic = &*self.topic,
                    "kafka partitions paused, source is full"
                );
            }
            Err(error) => {
                warn!(job = &*self.job, topic = &*self.topic, %error, "could not pause kafka partitions");
            }
        }
    }

    fn resume_if_paused(&mut self) {
        if !self.paused {
            return;
        }
        let result = self
            .consumer
            .assignment()
            .and_then(|assignment| self.consumer.resume(&assignment));
        match result {
            Ok(()) => {
                self.paused = false;
                debug!(
                    job = &*self.job,
                    topic = &*self.topic,
                    "kafka partitions resumed"
                );
            }
            // Still paused: the next delivered chunk tries again.
            Err(error) => {
                warn!(job = &*self.job, topic = &*self.topic, %error, "could not resume kafka partitions");
            }
        }
    }

    /// Which consumer errors the platform must see. The others were logged by the
    /// consumer context and librdkafka retries them.
    fn classify(&self, error: KafkaError) -> Option<PollFailure> {
        match error {
            KafkaError::MessageConsumptionFatal(code) => {
                let reason = self
                    .consumer
                    .client()
                    .fatal_error()
                    .map_or_else(|| code.to_string(), |(_, reason)| reason);
                Some(PollFailure {
                    error: SourceError::Unavailable {
                        connector: "kafka",
                        message: format!(
                            "topic {}: fatal consumer error, the source must be reconnected: {reason}",
                            self.topic
                        ),
                    },
                    fatal: true,
                })
            }
            KafkaError::MessageConsumption(code) if is_permission_error(code) => {
                Some(PollFailure {
                    error: SourceError::Config {
                        connector: "kafka",
                        message: format!(
                            "topic {}: {code}; check the credentials and the topic's and group's ACLs",
                            self.topic
                        ),
                    },
                    fatal: false,
                })
            }
            _ => None,
        }
    }
}

/// Errors that no retry fixes: the user's credentials or ACLs are wrong.
fn is_permission_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
    )
}

/// Copies one message out of librdkafka's buffers, as a chunk of one ([`ChunkBuilder`]).
/// A null payload becomes an empty one.
pub(super) fn event_from_message(message: &BorrowedMessage<'_>, topic: &Arc<str>) -> Event {
    let mut chunk = ChunkBuilder::default();
    chunk.push(message, topic);
    chunk
        .finish()
        .pop()
        .expect("a chunk of one pushed message holds one event")
}
