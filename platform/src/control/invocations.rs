//! Invocation records off the hot path: [`InvocationRecorder::record`] never waits (a full
//! queue drops the record and counts it); a background task writes what is queued to the
//! registry in batches (every second, or every [`FLUSH_RECORDS`] records, and on stop) and
//! keeps the table within its age and count limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::logs::JobLog;
use super::registry::{InvocationRecord, Registry};
use crate::pipeline::{BatchAttempt, BatchObserver};

/// Records written in one transaction at most.
pub const FLUSH_RECORDS: usize = 500;
/// Records waiting to be written at most; more are dropped (and counted).
const QUEUE_RECORDS: usize = 20_000;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How long invocation records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationRetention {
    pub max_age: Duration,
    pub max_per_job: i64,
}

impl Default for InvocationRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_per_job: 10_000,
        }
    }
}

/// Where a pipeline hands its invocation records.
#[derive(Debug, Clone)]
pub struct InvocationRecorder {
    sender: mpsc::Sender<InvocationRecord>,
    dropped: Arc<AtomicU64>,
}

impl InvocationRecorder {
    /// Starts the writer; it stops (after writing what is queued) when `stop` is
    /// cancelled and the returned task ends.
    pub fn spawn(
        registry: Registry,
        retention: InvocationRetention,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_RECORDS);
        let task = tokio::spawn(write_loop(registry, receiver, retention, stop));
        let recorder = Self {
            sender,
            dropped: Arc::default(),
        };
        (recorder, task)
    }

    /// Queues a record without waiting; drops it when the writer is behind.
    pub fn record(&self, record: InvocationRecord) {
        if self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the writer was behind or stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One running version's observer: turns its batch attempts into invocation records
/// (with the stderr lines its instances wrote during the attempt when the failure quotes
/// none) and queues them.
#[derive(Debug)]
pub struct VersionObserver {
    pub job: String,
    pub version: i64,
    pub recorder: InvocationRecorder,
    pub log: Arc<JobLog>,
}

impl BatchObserver for VersionObserver {
    fn attempt(&self, attempt: BatchAttempt) {
        let started_ms = attempt
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let instance = attempt.instance.unwrap_or_default();
        let lines = if instance.is_empty() {
            String::new()
        } else {
            self.log.tag(&instance, &attempt.id, started_ms)
        };
        let stderr_tail = if attempt.stderr_tail.is_empty() {
            lines
        } else {
            attempt.stderr_tail
        };
        let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.recorder.record(InvocationRecord {
            job: self.job.clone(),
            id: attempt.id,
            version: self.version,
            instance,
            started_ms,
            duration_ms: millis(attempt.duration),
            cold_start: attempt.cold_start,
            init_ms: attempt.init_time.map(millis),
            split: attempt.split,
            first_position: attempt.first_position.to_string(),
            last_position: attempt.last_position.to_string(),
            records_in: count(attempt.records_in),
            rows_out: count(attempt.rows_out),
            rejected: count(attempt.rejected),
            dead_letters: count(attempt.dead_letters),
            outcome: attempt.outcome.as_str().to_owned(),
            stderr_tail,
        });
    }
}

async fn write_loop(
    registry: Registry,
    mut receiver: mpsc::Receiver<InvocationRecord>,
    retention: InvocationRetention,
    stop: CancellationToken,
) {
    let mut buffer = Vec::with_capacity(FLUSH_RECORDS);
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            record = receiver.recv() => {
                let Some(record) = record else { break };
                buffer.push(record);
                if buffer.len() >= FLUSH_RECORDS {
                    write(&registry, &mut buffer).await;
                }
            }
            _ = flush.tick() => write(&registry, &mut buffer).await,
            _ = prune.tick() => {
                if let Err(error) = registry
                    .prune_invocations(retention.max_age, retention.max_per_job)
                    .await
                {
                    warn!(%error, "could not prune invocation records");
                }
            }
            () = stop.cancelled() => break,
        }
    }
    receiver.close();
    while let Some(record) = receiver.recv().await {
        buffer.push(record);
        if buffer.len() >= FLUSH_RECORDS {
            write(&registry, &mut buffer).await;
        }
    }
    write(&registry, &mut buffer).await;
}

/// Writes and empties `buffer`; on failure the records are dropped with a warning (they
/// are diagnostics, never needed for correctness).
async fn write(registry: &Registry, buffer: &mut Vec<InvocationRecord>) {
    if buffer.is_empty() {
        return;
    }
    if let Err(error) = registry.insert_invocations(buffer).await {
        warn!(%error, records = buffer.len(), "could not write invocation records");
    }
    buffer.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> InvocationRecord {
        InvocationRecord {
            job: "clicks".to_owned(),
            id: format!("b{i:05}"),
            version: 1,
            instance: "i-1".to_owned(),
            started_ms: super::super::registry::now_ms(),
            duration_ms: 3,
            cold_start: i == 0,
            init_ms: None,
            split: "clicks/0".to_owned(),
            first_position: (i * 10).to_string(),
            last_position: (i * 10 + 9).to_string(),
            records_in: 10,
            rows_out: 10,
            rejected: 0,
            dead_letters: 0,
            outcome: "ok".to_owned(),
            stderr_tail: String::new(),
        }
    }

    #[tokio::test]
    async fn queued_records_are_written_in_batches_and_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("registry.db").display());
        let registry = Registry::open(&url).await.unwrap();
        let stop = CancellationToken::new();
        let (recorder, task) = InvocationRecorder::spawn(
            registry.clone(),
            InvocationRetention::default(),
            stop.clone(),
        );
        for i in 0..1_234 {
            recorder.record(record(i));
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(recorder.dropped(), 0);
        let written = registry.invocations("clicks", 5_000).await.unwrap();
        assert_eq!(written.len(), 1_234);
        let records_in: i64 = written.iter().map(|record| record.records_in).sum();
        assert_eq!(records_in, 12_340);
        // The writer is gone: further records are dropped and counted, never waited on.
        recorder.record(record(9_999));
        assert_eq!(recorder.dropped(), 1);
    }
}
