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
//!     while a batch may start and fewer than instances + 2 batch tasks run:
//!         spawn run_batch(batch)                // retries, bisection: batch_runner.rs
//!     a task wants an instance → pool.lease(), for one invocation (leases.rs);
//!         after the call it goes straight to a waiting task, else → pool.release(),
//!         before the output is decoded
//!     finished batch → apply the outcomes now in split order
//!     every 500 ms: autoscaler (backlog, throughput) → desired; stop idle instances
//!     if commit_due() { intents; sink.flush(); dead_letters.flush(); commit markers;
//!                           source.ack(pending); prune markers }
//! }
//! shutdown: stop intake → cut the open batches → run and apply them all → commit → stop
//! the instances
//! ```
//!
//! Parts, each read in one sitting: `intake.rs` (source → batches), `scheduling.rs`
//! (batches → tasks, outcomes applied in split order), `leases.rs` (instances lent to
//! tasks per invocation), `batch_runner.rs` (one batch: retries, bisection, dead
//! letters), `dispatch.rs` (which batch may start),
//! `commit_sequence.rs` (the pending commit, step by step), `job.rs` (open, run, stop).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_connectors::{CheckpointDelta, CheckpointError, Source, SourceError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::batcher::Batcher;
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
use leases::{LeaseMessage, Lender, Line};
pub use observer::{AttemptOutcome, BatchAttempt, BatchObserver};

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

/// What a job shares with the rest of the process: the node's instance slots, the
/// board its status is published on, and who is told about each batch attempt.
#[derive(Debug, Clone)]
pub struct JobRuntime {
    pub node: Arc<NodeCapacity>,
    pub status: JobStatusHandle,
    /// Told about every batch attempt (see [`observer`]); none costs nothing.
    pub observer: Option<Arc<dyn BatchObserver>>,
}

impl JobRuntime {
    /// The process-wide node capacity and a status nobody serves.
    pub fn for_job(spec: &JobSpec) -> Self {
        Self {
            node: NodeCapacity::global(None),
            status: JobStatusHandle::detached(&spec.name).masking(&spec.secrets),
            observer: None,
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
    let (lender, leases, line) = Lender::new();
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
            observer: runtime.observer,
            attempt_ids: observer::AttemptIds::new(&run_id),
            lender,
        },
        source,
        batcher: Batcher::new(&spec.batch),
        dispatch: Dispatcher::new(spec.scaling.ordering),
        pool,
        leases,
        line,
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
        last_event_at: None,
        burst: 0,
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

/// A batch task's result: its ticket and what the batch produced.
type Finished = (Ticket, Result<BatchOutcome, JobError>);

struct Pipeline<'a> {
    spec: &'a JobSpec,
    context: BatchContext,
    source: Box<dyn Source>,
    batcher: Batcher,
    dispatch: Dispatcher<BatchOutcome>,
    pool: InstancePool,
    /// What batch tasks say about instances: wanted, given back, lost (`leases`).
    leases: mpsc::UnboundedReceiver<LeaseMessage>,
    /// Tasks waiting for an instance, oldest first.
    line: Line,
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
    /// When the source last delivered events.
    last_event_at: Option<Instant>,
    /// Events delivered since the source was last quiet for `batch.max_idle`.
    burst: usize,
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
    ///
    /// Earlier when the source went quiet after a backlog or a burst ([`Self::drained`]).
    /// None during a redo: it commits its whole range at once, when its source ends, so
    /// no deadline may wake intake before (a deadline that has passed would be ready on
    /// every turn and starve the reader).
    fn commit_deadline(&self) -> Option<Instant> {
        if self.committer.redoing() {
            return None;
        }
        let positions = self
            .pending_since
            .map(|since| since + self.spec.output.max_file_age);
        [self.sink.flush_deadline(), positions, self.drained()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the source counts as drained after a backlog or a burst — at least a batch
    /// (`batch.max_records`) of events since it was last quiet — once every event it
    /// delivered is processed and output or positions wait: `batch.max_idle` after its
    /// last event. Then `output.max_file_age` would only delay the commit, since no rows
    /// are coming to fill the files; committing ends a backlog or a burst with its output
    /// durable and its positions acknowledged at once. A trickle (events further apart
    /// than `max_idle`) never reaches a batch, so its files still wait for the file age
    /// and a trickle does not make a file per record.
    fn drained(&self) -> Option<Instant> {
        let processed =
            self.batcher.is_empty() && self.running.is_empty() && self.dispatch.is_idle();
        let waiting = self.sink.buffered_rows() > 0 || !self.pending.is_empty();
        let burst = self.burst >= self.spec.batch.max_records;
        self.last_event_at
            .filter(|_| processed && waiting && burst)
            .map(|at| at + self.spec.batch.max_idle)
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
            if self.running.is_empty() {
                return Ok(());
            }
            tokio::select! {
                Some(done) = self.running.join_next() => self.finished(done)?,
                Some(message) = self.leases.recv() => self.lend(message),
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

mod batch_runner;
mod commit_sequence;
mod dispatch;
mod intake;
mod job;
mod leases;
pub mod observer;
mod scheduling;

#[cfg(test)]
mod tests;
