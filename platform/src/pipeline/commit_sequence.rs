//! The commit sequence: what makes a job's buffered output durable before its positions
//! are acknowledged, step by step, each step retried through outages.
//!
//! ```text
//! (a) intents (Kafka and object ranges)  (b) output objects, dead letters, AMQP message ids
//! (c) commit markers                     (d) acknowledge the positions   (e) prune markers
//! ```
//!
//! Invariant: a step starts only after the previous one succeeded, so positions are
//! acknowledged only once every row and dead letter derived from them is durable. A
//! transient failure (store or broker unreachable) is retried for as long as the job
//! runs, and the job reports itself degraded meanwhile (see `status`).

use std::time::{Duration, Instant};

use sluice_connectors::Classify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{JobError, Pipeline, backoff};
use crate::status::{JobState, JobStatusHandle};

impl Pipeline<'_> {
    /// Makes every buffered row and dead letter durable, then acknowledges their
    /// positions; ranges of Kafka partitions and object versions go through the commit
    /// protocol of [`crate::commit`].
    pub(super) async fn commit(&mut self) -> Result<(), JobError> {
        let redoing = self.committer.redoing();
        if self.pending.is_empty() && self.sink.buffered_rows() == 0 && !redoing {
            return Ok(());
        }
        let started = Instant::now();
        // Names every file: ranged splits from their range. Closing files encodes their
        // last row groups and footers: CPU work, kept off the runtime's other tasks like
        // the rest of the Parquet encoding.
        let ranges = self.committer.ranges(&self.pending);
        tokio::task::block_in_place(|| self.sink.finish_open_files(&ranges))?;
        let closed = started.elapsed();
        // (a) intents: which objects each range is about to write.
        let objects = self.sink.pending_objects();
        let dead_objects = self.dead_letters.planned_objects(&ranges);
        let (job, shutdown) = (&self.spec.name, &self.shutdown);
        let status = &self.status;
        let staged = retry_commit_step(job, shutdown, status, "write commit intents", async || {
            self.committer.stage(&ranges, &objects, &dead_objects).await
        })
        .await?;
        // (b) the objects.
        let files = retry_commit_step(job, shutdown, status, "upload output", async || {
            self.sink.flush().await
        })
        .await?;
        let dead = retry_commit_step(job, shutdown, status, "write dead letters", async || {
            self.dead_letters.flush(&ranges).await
        })
        .await?;
        if let Some(ids) = self.message_ids.as_mut() {
            retry_commit_step(job, shutdown, status, "record message ids", async || {
                ids.persist().await
            })
            .await?;
        }
        // (c) commit markers: the ranges' output is complete.
        let committer = &mut self.committer;
        let committed =
            retry_commit_step(job, shutdown, status, "write commit markers", async || {
                staged.commit(committer).await
            })
            .await?;
        // (d) every row and dead letter derived from `pending` is durable: acknowledge it.
        let delta = std::mem::take(&mut self.pending);
        self.pending_since = None;
        if !delta.is_empty() {
            let source = &mut self.source;
            retry_commit_step(job, shutdown, status, "acknowledge positions", async || {
                source.ack(&delta).await
            })
            .await?;
        }
        // (e) older markers are no longer needed.
        self.committer.prune(&committed).await;
        self.stats.files += files.len() as u64;
        self.stats.commits += 1;
        let rows: usize = files.iter().map(|f| f.rows).sum();
        info!(job = %self.spec.name, files = files.len(), rows, dead_letters = dead, ranges = committed.len(), positions = %delta, close_ms = closed.as_millis() as u64, took_ms = started.elapsed().as_millis() as u64, "committed");
        for file in &files {
            debug!(job = %self.spec.name, path = %file.path, rows = file.rows, bytes = file.bytes, "wrote object");
        }
        Ok(())
    }
}

/// Runs one step of the commit until it succeeds. A transient failure (the store or the
/// broker unreachable) is retried with backoff for as long as the job runs — nothing is
/// acknowledged meanwhile, so an outage only delays output — and, once shutdown was
/// requested, [`SHUTDOWN_COMMIT_ATTEMPTS`] more times before the job gives up (what was
/// not committed is redelivered on the next start). Any other failure stops the job.
async fn retry_commit_step<T, E: Classify>(
    job: &str,
    shutdown: &CancellationToken,
    status: &JobStatusHandle,
    step: &str,
    mut run: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut attempt = 1;
    let mut after_shutdown = 0;
    let mut slow = false;
    loop {
        // A request to an unreachable endpoint can hang (and the client retries inside);
        // the job reports itself degraded once a step takes suspiciously long.
        let tried = run();
        tokio::pin!(tried);
        let result = tokio::select! {
            result = &mut tried => result,
            () = tokio::time::sleep(SLOW_COMMIT_STEP) => {
                slow = true;
                warn!(job, waited_ms = SLOW_COMMIT_STEP.as_millis() as u64, "{step}: no answer yet; degraded, still waiting (nothing is acknowledged meanwhile)");
                status.set_state(JobState::Degraded, Some(format!("could not {step}: no answer for {}s; the store or broker may be unreachable", SLOW_COMMIT_STEP.as_secs())));
                tried.await
            }
        };
        let error = match result {
            Ok(done) => {
                if attempt > 1 || slow {
                    info!(job, attempts = attempt, "{step}: succeeded after an outage");
                    status.set_state(JobState::Running, None);
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
        status.set_state(
            JobState::Degraded,
            Some(format!("could not {step}: {error}")),
        );
        warn!(job, attempt, %error, backoff_ms = backoff.as_millis() as u64, "could not {step}; degraded, retrying (nothing is acknowledged meanwhile)");
        tokio::time::sleep(backoff).await;
        attempt += 1;
    }
}

/// Backoff between tries of a commit step: from 1 s, doubling, at most 10 s.
const COMMIT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
const COMMIT_RETRY_CAP: Duration = Duration::from_secs(10);
/// How long one try of a commit step may take before the job reports itself degraded.
const SLOW_COMMIT_STEP: Duration = Duration::from_secs(10);
/// Tries of a commit step left once shutdown was requested.
const SHUTDOWN_COMMIT_ATTEMPTS: u32 = 3;
