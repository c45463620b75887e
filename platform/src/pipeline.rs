//! One job's data path: source → batcher → function → Parquet → commit → ack.
//!
//! Invariant (the promise users rely on): a source position is acknowledged only after
//! every output row derived from it is in a completed object, and every record the
//! function rejected with `$error` is in the dead-letter destination. Batches that fail
//! are retried with backoff; a batch that keeps failing stops the job with nothing of it
//! acknowledged (bisection and dead-lettering of poison batches come later).
//!
//! ```text
//! loop {
//!     events   = source.next_events()        // or the batch window / file age expires
//!     batch    = batcher.push(events)
//!     output   = function.invoke(batch)       // retried with backoff
//!     sink.write(decode(output.rows)); pending.extend(batch.checkpoint)
//!     if sink.flush_due() { sink.flush(); dead_letters.flush(); source.ack(pending) }
//! }
//! shutdown: stop intake → cut and run the open batch → flush → ack → stop the function
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_connectors::{CheckpointDelta, CheckpointError, Source, SourceError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::batcher::Batcher;
use crate::deadletter::{DeadLetterError, DeadLetterSink};
use crate::function::FunctionRunner;
use crate::output::store::{StoreError, open_store};
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
}

/// Unique per process start, so two runs of a job never write the same object name.
pub fn run_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{millis:x}-{:x}", std::process::id())
}

/// Runs `spec` over `source` until `shutdown` is cancelled (graceful: the open batch is
/// finished, flushed and acknowledged) or a finite source is exhausted.
pub async fn run_job(
    spec: &JobSpec,
    source: Box<dyn Source>,
    shutdown: CancellationToken,
) -> Result<JobStats, JobError> {
    let run_id = run_id();
    let location = open_store(&spec.output.url, &spec.output.options)?;
    let sink = ParquetSink::new(location, &spec.output, &format!("part-{run_id}"))?;
    let dead_letters = DeadLetterSink::new(spec, &run_id)?;
    let mut pipeline = Pipeline {
        spec,
        source,
        batcher: Batcher::new(&spec.batch),
        function: FunctionRunner::new(&spec.name, &spec.dir, &spec.function),
        sink,
        dead_letters,
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
        let drained = match (intake, open) {
            (Ok(()), Some(batch)) => self.process(batch).await,
            (intake, _) => intake,
        };
        let committed = self.commit().await;
        drained.and(committed)
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
                    if let Some(batch) = self.batcher.cut_if_due(Instant::now()) {
                        self.process(batch).await?;
                    }
                }
                () = sleep_until(flush_deadline) => {}
                events = self.source.next_events() => match events? {
                    Some(events) => {
                        for batch in self.batcher.push(events, Instant::now())? {
                            self.process(batch).await?;
                        }
                    }
                    None => return Ok(()),
                },
            }
            if self.sink.flush_due(Instant::now()) {
                self.commit().await?;
            }
        }
    }

    /// Makes every buffered row and dead letter durable, then acknowledges their positions.
    async fn commit(&mut self) -> Result<(), JobError> {
        if self.pending.is_empty() && self.sink.buffered_rows() == 0 {
            return Ok(());
        }
        // Closing files encodes their last row groups and footers: CPU work, kept off the
        // runtime's other tasks like the rest of the Parquet encoding.
        tokio::task::block_in_place(|| self.sink.finish_open_files())?;
        let mut attempt = 1;
        let files = loop {
            match self.sink.flush().await {
                Ok(files) => break files,
                Err(error) if error.is_retryable() && attempt < COMMIT_ATTEMPTS => {
                    self.wait_before_commit_retry("upload output", attempt, &error)
                        .await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let mut attempt = 1;
        let dead = loop {
            match self.dead_letters.flush().await {
                Ok(dead) => break dead,
                Err(error) if attempt < COMMIT_ATTEMPTS => {
                    self.wait_before_commit_retry("write dead letters", attempt, &error)
                        .await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        };
        // Every row and dead letter derived from `pending` is durable: acknowledge it.
        let delta = std::mem::take(&mut self.pending);
        let mut attempt = 1;
        while !delta.is_empty() {
            match self.source.ack(&delta).await {
                Ok(()) => break,
                Err(error @ (SourceError::Ack { .. } | SourceError::Unavailable { .. }))
                    if attempt < COMMIT_ATTEMPTS =>
                {
                    self.wait_before_commit_retry("acknowledge positions", attempt, &error)
                        .await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.stats.files += files.len() as u64;
        self.stats.commits += 1;
        let rows: usize = files.iter().map(|f| f.rows).sum();
        info!(job = %self.spec.name, files = files.len(), rows, dead_letters = dead, positions = %delta, "committed");
        for file in &files {
            debug!(job = %self.spec.name, path = %file.path, rows = file.rows, bytes = file.bytes, "wrote object");
        }
        Ok(())
    }
}

impl Pipeline<'_> {
    /// Backs off before retrying a step of the commit. Not cut short by shutdown: a
    /// graceful stop still wants its output committed.
    async fn wait_before_commit_retry(
        &self,
        step: &str,
        attempt: u32,
        error: &dyn std::fmt::Display,
    ) {
        let backoff = backoff(COMMIT_RETRY_BACKOFF, attempt);
        warn!(job = %self.spec.name, attempt, max_attempts = COMMIT_ATTEMPTS, %error, backoff_ms = backoff.as_millis() as u64, "could not {step}; retrying");
        tokio::time::sleep(backoff).await;
    }
}

/// Tries per commit step (upload, dead letters, ack) before the job stops: with the
/// backoff below, about 15 s of outage is ridden out.
const COMMIT_ATTEMPTS: u32 = 5;
const COMMIT_RETRY_BACKOFF: Duration = Duration::from_secs(1);

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
