//! One job's data path: source → batcher → dispatcher → function instances → Parquet →
//! commit → ack.
//!
//! Invariant (the promise users rely on): a source position is acknowledged only after
//! every output row derived from it is in a completed object, and every record the
//! function rejected with `$error` (or that kept failing it) is in the dead-letter
//! destination. Batches run concurrently on a pool of instances (`crate::pool`), as many
//! as the autoscaler wants and `scaling.ordering` allows; a finished batch is applied
//! (rows to the sink, dead letters, positions to the pending checkpoint) only after every
//! earlier batch of its split (`dispatch`), so commits per split stay in input order even
//! when batches finish out of order.
//!
//! Splits with replayable positions (Kafka partitions, object versions) get exactly-once
//! output: each commit writes, per split, the range of positions it covers through the
//! protocol of [`crate::commit`] (intent marker → objects named from the range → commit
//! marker → acknowledgement), and events at or below a range that already has a commit
//! marker (redelivered because an acknowledgement was lost) are skipped. AMQP queues are
//! at-least-once, with duplicates dropped by `message_id` (`commit::message_ids`).
//! Which kind a split is comes from its typed [`sluice_connectors::SplitId`], never from
//! its text.
//!
//! ```text
//! loop {
//!     events  = source.next_events()            // while less than QUEUE_BYTES waits in batches
//!     events.retain(not already committed)
//!     dispatcher.enqueue(batcher.push(events))  // one open batch per split
//!     while a batch may start and pool.lease() gives an instance:
//!         spawn run_batch(batch, instance)      // retries, bisection: batch_runner.rs
//!     finished batch → pool.release(instance); apply the outcomes now in split order
//!     every 500 ms: autoscaler (backlog, throughput) → desired; stop idle instances
//!     if commit_due() { intents; sink.flush(); dead_letters.flush(); commit markers;
//!                           source.ack(pending); prune markers }
//! }
//! shutdown: stop intake → cut the open batches → run and apply them all → commit → stop
//! the instances
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_connectors::{CheckpointDelta, CheckpointError, Event, Origin, Source, SourceError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::batcher::{Batch, Batcher};
use crate::commit::message_ids::{MessageIdError, MessageIds};
use crate::commit::{CommitError, Committer};
use crate::deadletter::{DeadLetterError, DeadLetterSink};
use crate::function::FunctionRunner;
use crate::output::store::{OutputLocation, StoreError};
use crate::output::writer::{ParquetSink, WriteError};
use crate::pool::InstancePool;
use crate::pool::node::NodeCapacity;
use crate::spec::JobSpec;
pub use crate::status::JobStats;
use crate::status::{JobState, JobStatusHandle};
use batch_runner::{BatchContext, BatchOutcome};
use dispatch::{Dispatcher, Ticket};
pub use job::{Job, JobOpenError, JobStopper};

/// Why a job stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("output store: {0}")]
    Store(#[from] StoreError),
    #[error("writing parquet output: {0}")]
    Output(#[from] WriteError),
    #[error("dead letters: {0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(
        "batch of {records} records ({positions}) failed {attempts} times, last: {last_error}; nothing of it was acknowledged, it will be redelivered when the job starts again"
    )]
    BatchFailed {
        records: usize,
        positions: String,
        attempts: u32,
        last_error: String,
    },
    #[error(transparent)]
    MessageIds(#[from] MessageIdError),
    /// A bug in Sluice: a batch task panicked or was lost.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Unique per process start, so two runs of a job never write the same object name.
pub fn run_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{millis:x}-{:x}", std::process::id())
}

/// What a job shares with the rest of the process: the node's instance slots and the
/// board its status is published on.
#[derive(Debug, Clone)]
pub struct JobRuntime {
    pub node: Arc<NodeCapacity>,
    pub status: JobStatusHandle,
}

impl JobRuntime {
    /// The process-wide node capacity and a status nobody serves.
    pub fn for_job(spec: &JobSpec) -> Self {
        Self {
            node: NodeCapacity::global(None),
            status: JobStatusHandle::detached(&spec.name).masking(&spec.secrets),
        }
    }

    /// This runtime with failure reasons published with the job's secrets masked: they
    /// quote errors, which may quote the function's output.
    pub(crate) fn masking(mut self, spec: &JobSpec) -> Self {
        self.status = self.status.masking(&spec.secrets);
        self
    }
}

/// Runs `spec` over `source` until `shutdown` is cancelled (graceful: the open batches
/// are finished, flushed and acknowledged) or a finite source is exhausted: the body of
/// [`Job::run`]. Recovery's redo of an unfinished range runs through it too, with a redo
/// committer and a source over that one range.
async fn run_pipeline(
    spec: &JobSpec,
    location: OutputLocation,
    dead_location: OutputLocation,
    source: Box<dyn Source>,
    shutdown: CancellationToken,
    committer: Committer,
    runtime: JobRuntime,
) -> Result<JobStats, JobError> {
    let run_id = run_id();
    let message_ids = match crate::trigger::deduplicated_queue(spec) {
        Some(queue) => Some(MessageIds::load(location.clone(), queue, &run_id).await?),
        None => None,
    };
    let sink = ParquetSink::new(location, &spec.output, &format!("part-{run_id}"))?;
    let dead_letters = DeadLetterSink::for_job(spec, dead_location, &run_id);
    let template =
        FunctionRunner::new(&spec.name, &spec.dir, &spec.function).with_secrets(&spec.secrets);
    let pool = InstancePool::new(
        &spec.name,
        template,
        spec.function.mode,
        spec.scaling,
        runtime.node,
    );
    let mut pipeline = Pipeline {
        spec,
        context: BatchContext {
            spec: Arc::new(spec.clone()),
            shutdown: shutdown.clone(),
        },
        source,
        batcher: Batcher::new(&spec.batch),
        dispatch: Dispatcher::new(spec.scaling.ordering),
        pool,
        running: JoinSet::new(),
        sink,
        dead_letters,
        committer,
        pending: CheckpointDelta::new(),
        stats: JobStats::default(),
        shutdown,
        status: runtime.status,
        failure: None,
        intake_stopped: false,
        message_ids,
        pending_since: None,
    };
    pipeline.status.set_state(JobState::Running, None);
    let result = pipeline.run().await;
    pipeline.pool.shutdown().await;
    pipeline.source.close().await;
    pipeline.publish_status();
    let stats = pipeline.stats;
    match &result {
        Ok(()) => {
            info!(job = %spec.name, ?stats, "job stopped");
            pipeline.status.set_state(JobState::Stopped, None);
        }
        Err(error) => {
            let error_text = spec.redact(&error.to_string()).into_owned();
            warn!(job = %spec.name, ?stats, error = %error_text, "job failed");
            pipeline
                .status
                .set_state(JobState::Failed, Some(error.to_string()));
        }
    }
    result.map(|()| stats)
}

/// How often the autoscaler and the idle-instance reaper run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);
/// Intake pauses once this many payload bytes wait in batches for an instance. A broker
/// hands over one partition's backlog in chunks, so the queue must hold more than one
/// chunk of one partition for the next partition's batches to reach free instances.
const QUEUE_BYTES: usize = 32 << 20;
/// Batches that may always wait, however large, and the most that may wait at all.
const QUEUE_BATCHES_MIN: usize = 4;
const QUEUE_BATCHES_MAX: usize = 4096;

/// A batch task's result: its ticket, its runner back (none if the task panicked), and
/// what the batch produced.
type Finished = (
    Ticket,
    Option<FunctionRunner>,
    Result<BatchOutcome, JobError>,
);

struct Pipeline<'a> {
    spec: &'a JobSpec,
    context: BatchContext,
    source: Box<dyn Source>,
    batcher: Batcher,
    dispatch: Dispatcher<BatchOutcome>,
    pool: InstancePool,
    running: JoinSet<Finished>,
    sink: ParquetSink,
    dead_letters: DeadLetterSink,
    committer: Committer,
    /// Positions whose output is buffered in `sink` but not yet durable.
    pending: CheckpointDelta,
    stats: JobStats,
    shutdown: CancellationToken,
    status: JobStatusHandle,
    /// The first batch failure: no batch starts after it; the job stops once the running
    /// ones are finished and what was applied is committed.
    failure: Option<JobError>,
    /// Set when intake failed: queued batches are not started.
    intake_stopped: bool,
    /// AMQP jobs: ids of processed messages, to drop duplicates.
    message_ids: Option<MessageIds>,
    /// When `pending` last went from empty to holding positions.
    pending_since: Option<Instant>,
}

impl Pipeline<'_> {
    async fn run(&mut self) -> Result<(), JobError> {
        let intake = self.intake().await;
        match &intake {
            Ok(()) if self.failure.is_none() => {
                let open = self.batcher.cut();
                self.enqueue(open);
            }
            _ => self.intake_stopped = true,
        }
        // Whatever happened, what was already processed is committed, so a failed batch
        // never holds back the output before it.
        let drained = self.drain().await;
        let committed = self.commit().await;
        let failure = self.failure.take().map_or(Ok(()), Err);
        intake.and(drained).and(failure).and(committed)
    }

    /// When the next commit is due: when the sink's oldest file must close, or — for
    /// positions with no rows to write (duplicates, records that all went to the dead
    /// letters, output with no rows) — `output.max_file_age` after the first of them, so
    /// they are acknowledged even when no row ever follows.
    fn commit_deadline(&self) -> Option<Instant> {
        let positions = self
            .pending_since
            .map(|since| since + self.spec.output.max_file_age);
        match (self.sink.flush_deadline(), positions) {
            (Some(rows), Some(positions)) => Some(rows.min(positions)),
            (rows, positions) => rows.or(positions),
        }
    }

    /// Also due, whatever the file age, when the source is about to stop delivering until
    /// positions are acknowledged ([`Source::ack_pressure`]: an AMQP prefetch window).
    fn commit_due(&self, now: Instant) -> bool {
        self.sink.flush_due(now)
            || self.commit_deadline().is_some_and(|due| due <= now)
            || (!self.pending.is_empty() && self.source.ack_pressure(&self.pending))
    }

    /// Starts what may start and waits until no batch is queued or running.
    async fn drain(&mut self) -> Result<(), JobError> {
        loop {
            self.start_batches();
            let Some(done) = self.running.join_next().await else {
                return Ok(());
            };
            self.finished(done)?;
        }
    }

    /// Drops events a commit marker already covers (see [`Committer::already_committed`]).
    fn skip_committed(&mut self, mut events: Vec<Event>) -> Vec<Event> {
        let before = events.len();
        let (committer, pending) = (&self.committer, &mut self.pending);
        events.retain(|event| {
            let written = committer.already_committed(event);
            if written && let Origin::Object { .. } = event.origin {
                // Acknowledged with the next commit, so the object can be done; an `Err`
                // means the position is pending already.
                let _ = pending.record(event.origin.split(), event.origin.position());
            }
            !written
        });
        let skipped = before - events.len();
        if !self.pending.is_empty() && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        if skipped > 0 {
            self.stats.skipped_committed += skipped as u64;
            debug!(job = %self.spec.name, skipped, "skipped redelivered records whose output is already committed");
        }
        events
    }

    /// Batches `events`; a duplicate AMQP message (see `message_ids`) is not batched but
    /// queued, in its split's order, to be acknowledged only.
    fn take(&mut self, events: Vec<Event>) -> Result<(), JobError> {
        if self.message_ids.is_none() {
            let full = self.batcher.push(events, Instant::now())?;
            self.enqueue(full);
            return Ok(());
        }
        let mut run = Vec::with_capacity(events.len());
        for event in events {
            let duplicate = self
                .message_ids
                .as_mut()
                .is_some_and(|ids| ids.is_duplicate(&event));
            if !duplicate {
                run.push(event);
                continue;
            }
            let now = Instant::now();
            let split = event.origin.split();
            let full = self.batcher.push(std::mem::take(&mut run), now)?;
            self.enqueue(full);
            let open = self.batcher.cut_split(&split);
            self.enqueue(open.into_iter().collect());
            debug!(job = %self.spec.name, origin = ?event.origin, "duplicate message: its message_id was already processed; acknowledging it without running it");
            self.stats.duplicates += 1;
            let position = event.origin.position();
            self.enqueue(vec![Batch::acknowledge_only(split, position, now)?]);
        }
        let full = self.batcher.push(run, Instant::now())?;
        self.enqueue(full);
        Ok(())
    }

    fn enqueue(&mut self, batches: Vec<Batch>) {
        for batch in batches {
            self.dispatch.enqueue(batch);
        }
    }

    /// Consumes until shutdown, the end of a finite source, or a batch failure.
    async fn intake(&mut self) -> Result<(), JobError> {
        let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.failure.is_some() {
                return Ok(());
            }
            let batch_deadline = self.batcher.deadline();
            let flush_deadline = self.commit_deadline();
            let queued = self.dispatch.queued_batches();
            let room = queued < QUEUE_BATCHES_MIN
                || (queued < QUEUE_BATCHES_MAX && self.dispatch.queued_bytes() < QUEUE_BYTES);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    info!(job = %self.spec.name, "shutdown requested: finishing the open batches");
                    return Ok(());
                }
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    self.finished(done)?;
                }
                () = sleep_until(batch_deadline) => {
                    let due = self.batcher.cut_if_due(Instant::now());
                    self.enqueue(due);
                }
                () = sleep_until(flush_deadline) => {}
                _ = maintenance.tick() => self.maintain().await,
                events = self.source.next_events(), if room => match events? {
                    Some(events) => {
                        let events = self.skip_committed(events);
                        self.take(events)?;
                    }
                    None => return Ok(()),
                },
            }
            self.start_batches();
            // A redo commits its whole range at once, with the range's own boundaries.
            if self.commit_due(Instant::now()) && !self.committer.redoing() {
                self.commit().await?;
            }
        }
    }
}

/// `base * 2^(attempt-1)`, capped at 60 s, with ±25 % jitter so retries of many jobs
/// don't align.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << (attempt - 1).min(16));
    let capped = exp.min(Duration::from_secs(60));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter = 0.75 + f64::from(nanos % 1000) / 2000.0;
    capped.mul_f64(jitter)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

mod batch_runner;
mod commit_sequence;
mod dispatch;
mod job;
mod scheduling;

#[cfg(test)]
mod tests;
