//! One job's data path: source → batcher → function → Parquet → commit → ack.
//!
//! Invariant (the promise users rely on): a source position is acknowledged only after
//! every output row derived from it is in a completed object, and every record the
//! function rejected with `$error` is in the dead-letter destination. Batches that fail
//! are retried with backoff; a batch that keeps failing stops the job with nothing of it
//! acknowledged (bisection and dead-lettering of poison batches come later).
//!
//! Kafka records get exactly-once output: each commit writes, per partition, the range
//! of offsets it covers through the protocol of [`crate::commit`] (intent marker →
//! objects named from the range → commit marker → offsets), and records at or below a
//! range that already has a commit marker (redelivered because an offset commit was
//! lost) are skipped. Other splits are at-least-once.
//!
//! ```text
//! loop {
//!     events   = source.next_events()        // or the batch window / file age expires
//!     events.retain(not already committed)
//!     batches  = batcher.push(events)         // one open batch per split
//!     output   = function.invoke(batch)       // retried with backoff
//!     sink.write(split, decode(output.rows)); pending.extend(batch.checkpoint)
//!     if sink.flush_due() { intents; sink.flush(); dead_letters.flush(); commit markers;
//!                           source.ack(pending); prune markers }
//! }
//! shutdown: stop intake → cut and run the open batches → commit → stop the function
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_connectors::{CheckpointDelta, CheckpointError, Event, Origin, Source, SourceError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::batcher::{Batch, Batcher};
use crate::commit::{CommitError, Committer, kafka_topic};
use crate::deadletter::{DeadLetterError, DeadLetterSink, dead_letter_location};
use crate::function::FunctionRunner;
use crate::output::store::{OutputLocation, StoreError, open_store};
use crate::output::writer::{ParquetSink, WriteError};
use crate::spec::JobSpec;

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
}

/// Counters for one run, logged at the end and returned to the caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobStats {
    pub records_in: u64,
    pub rows_out: u64,
    pub record_errors: u64,
    pub batches: u64,
    pub retries: u64,
    /// Batches split in two because they kept failing.
    pub bisections: u64,
    /// Records and rows sent to the dead-letter destination.
    pub dead_letters: u64,
    pub files: u64,
    pub commits: u64,
    /// Kafka records skipped because a commit marker already covers them.
    pub skipped_committed: u64,
}

/// Unique per process start, so two runs of a job never write the same object name.
pub fn run_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{millis:x}-{:x}", std::process::id())
}

/// Runs `spec` over `source` until `shutdown` is cancelled (graceful: the open batches
/// are finished, flushed and acknowledged) or a finite source is exhausted.
///
/// A Kafka job's output must have no unfinished range: run
/// [`crate::commit::recover`] first (before the source joins its group), or this fails
/// with [`CommitError::Unfinished`].
pub async fn run_job(
    spec: &JobSpec,
    source: Box<dyn Source>,
    shutdown: CancellationToken,
) -> Result<JobStats, JobError> {
    let location = open_store(&spec.output.url, &spec.output.options)?;
    let dead_location = dead_letter_location(spec, &location)?;
    let committer =
        Committer::load(location.clone(), dead_location.clone(), kafka_topic(spec)).await?;
    run_pipeline(spec, location, dead_location, source, shutdown, committer).await
}

/// [`run_job`] with its output locations and committer given: a normal run, or (with a
/// redo committer and a source over one range) the redo of an unfinished range.
pub(crate) async fn run_pipeline(
    spec: &JobSpec,
    location: OutputLocation,
    dead_location: OutputLocation,
    source: Box<dyn Source>,
    shutdown: CancellationToken,
    committer: Committer,
) -> Result<JobStats, JobError> {
    let run_id = run_id();
    let sink = ParquetSink::new(location, &spec.output, &format!("part-{run_id}"))?;
    let dead_letters = DeadLetterSink::new(dead_location, &run_id);
    let mut pipeline = Pipeline {
        spec,
        source,
        batcher: Batcher::new(&spec.batch),
        function: FunctionRunner::new(&spec.name, &spec.dir, &spec.function),
        sink,
        dead_letters,
        committer,
        pending: CheckpointDelta::new(),
        stats: JobStats::default(),
        shutdown,
    };
    let result = pipeline.run().await;
    pipeline.function.shutdown().await;
    pipeline.source.close().await;
    let stats = pipeline.stats;
    match &result {
        Ok(()) => info!(job = %spec.name, ?stats, "job stopped"),
        Err(error) => warn!(job = %spec.name, ?stats, %error, "job failed"),
    }
    result.map(|()| stats)
}

struct Pipeline<'a> {
    spec: &'a JobSpec,
    source: Box<dyn Source>,
    batcher: Batcher,
    function: FunctionRunner,
    sink: ParquetSink,
    dead_letters: DeadLetterSink,
    committer: Committer,
    /// Positions whose output is buffered in `sink` but not yet durable.
    pending: CheckpointDelta,
    stats: JobStats,
    shutdown: CancellationToken,
}

impl Pipeline<'_> {
    async fn run(&mut self) -> Result<(), JobError> {
        let intake = self.intake().await;
        // Whatever happened to intake, what was already processed is committed, so a
        // failed batch never holds back the output before it.
        let open = self.batcher.cut();
        let drained = match intake {
            Ok(()) => self.process_all(open).await,
            intake => intake,
        };
        let committed = self.commit().await;
        drained.and(committed)
    }

    async fn process_all(&mut self, batches: Vec<Batch>) -> Result<(), JobError> {
        for batch in batches {
            self.process(batch).await?;
        }
        Ok(())
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
        if skipped > 0 {
            self.stats.skipped_committed += skipped as u64;
            debug!(job = %self.spec.name, skipped, "skipped redelivered records whose output is already committed");
        }
        events
    }

    /// Consumes until shutdown or the end of a finite source.
    async fn intake(&mut self) -> Result<(), JobError> {
        loop {
            let batch_deadline = self.batcher.deadline();
            let flush_deadline = self.sink.flush_deadline();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    info!(job = %self.spec.name, "shutdown requested: finishing the open batch");
                    return Ok(());
                }
                () = sleep_until(batch_deadline) => {
                    let due = self.batcher.cut_if_due(Instant::now());
                    self.process_all(due).await?;
                }
                () = sleep_until(flush_deadline) => {}
                events = self.source.next_events() => match events? {
                    Some(events) => {
                        let events = self.skip_committed(events);
                        let full = self.batcher.push(events, Instant::now())?;
                        self.process_all(full).await?;
                    }
                    None => return Ok(()),
                },
            }
            // A redo commits its whole range at once, with the range's own boundaries.
            if self.sink.flush_due(Instant::now()) && !self.committer.redoing() {
                self.commit().await?;
            }
        }
    }

    /// Makes every buffered row and dead letter durable, then acknowledges their
    /// positions; Kafka ranges go through the commit protocol of [`crate::commit`].
    async fn commit(&mut self) -> Result<(), JobError> {
        let redoing = self.committer.redoing();
        if self.pending.is_empty() && self.sink.buffered_rows() == 0 && !redoing {
            return Ok(());
        }
        // Names every file: Kafka splits from their range. Closing files encodes their
        // last row groups and footers: CPU work, kept off the runtime's other tasks like
        // the rest of the Parquet encoding.
        let ranges = self.committer.ranges(&self.pending);
        tokio::task::block_in_place(|| self.sink.finish_open_files(&ranges))?;
        // (a) intents: which objects each range is about to write.
        let objects = self.sink.pending_objects();
        let dead_objects = self.dead_letters.planned_objects(&ranges);
        let (job, shutdown) = (&self.spec.name, &self.shutdown);
        let staged = retry_commit_step(job, shutdown, "write commit intents", async || {
            self.committer.stage(&ranges, &objects, &dead_objects).await
        })
        .await?;
        // (b) the objects.
        let files = retry_commit_step(job, shutdown, "upload output", async || {
            self.sink.flush().await
        })
        .await?;
        let dead = retry_commit_step(job, shutdown, "write dead letters", async || {
            self.dead_letters.flush(&ranges).await
        })
        .await?;
        // (c) commit markers: the ranges' output is complete.
        let committer = &mut self.committer;
        let committed = retry_commit_step(job, shutdown, "write commit markers", async || {
            staged.commit(committer).await
        })
        .await?;
        // (d) every row and dead letter derived from `pending` is durable: acknowledge it.
        let delta = std::mem::take(&mut self.pending);
        if !delta.is_empty() {
            let source = &mut self.source;
            retry_commit_step(job, shutdown, "acknowledge positions", async || {
                source.ack(&delta).await
            })
            .await?;
        }
        // (e) older markers are no longer needed.
        self.committer.prune(&committed).await;
        self.stats.files += files.len() as u64;
        self.stats.commits += 1;
        let rows: usize = files.iter().map(|f| f.rows).sum();
        info!(job = %self.spec.name, files = files.len(), rows, dead_letters = dead, ranges = committed.len(), positions = %delta, "committed");
        for file in &files {
            debug!(job = %self.spec.name, path = %file.path, rows = file.rows, bytes = file.bytes, "wrote object");
        }
        Ok(())
    }
}

/// An error a commit step may hit: whether trying the same step again can succeed (the
/// store or broker is unreachable, not the data or the job at fault).
trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for WriteError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

impl Transient for CommitError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

impl Transient for DeadLetterError {
    fn is_transient(&self) -> bool {
        matches!(self, DeadLetterError::Write { .. })
    }
}

impl Transient for SourceError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Ack { .. } | SourceError::Unavailable { .. }
        )
    }
}

/// Runs one step of the commit until it succeeds. A transient failure (the store or the
/// broker unreachable) is retried with backoff for as long as the job runs — nothing is
/// acknowledged meanwhile, so an outage only delays output — and, once shutdown was
/// requested, [`SHUTDOWN_COMMIT_ATTEMPTS`] more times before the job gives up (what was
/// not committed is redelivered on the next start). Any other failure stops the job.
async fn retry_commit_step<T, E: Transient>(
    job: &str,
    shutdown: &CancellationToken,
    step: &str,
    mut run: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut attempt = 1;
    let mut after_shutdown = 0;
    loop {
        let error = match run().await {
            Ok(done) => {
                if attempt > 1 {
                    info!(job, attempts = attempt, "{step}: succeeded after an outage");
                }
                return Ok(done);
            }
            Err(error) => error,
        };
        if shutdown.is_cancelled() {
            after_shutdown += 1;
        }
        if !error.is_transient() || after_shutdown > SHUTDOWN_COMMIT_ATTEMPTS {
            return Err(error);
        }
        let backoff = backoff(COMMIT_RETRY_BACKOFF, attempt).min(COMMIT_RETRY_CAP);
        warn!(job, attempt, %error, backoff_ms = backoff.as_millis() as u64, "could not {step}; degraded, retrying (nothing is acknowledged meanwhile)");
        tokio::time::sleep(backoff).await;
        attempt += 1;
    }
}

/// Backoff between tries of a commit step: from 1 s, doubling, at most 10 s.
const COMMIT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
const COMMIT_RETRY_CAP: Duration = Duration::from_secs(10);
/// Tries of a commit step left once shutdown was requested.
const SHUTDOWN_COMMIT_ATTEMPTS: u32 = 3;

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

#[cfg(test)]
mod tests;
