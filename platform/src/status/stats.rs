//! A job run's counters: what `sluice run` logs at the end, what the status endpoint
//! shows, and what [`crate::pipeline::Job::run`] returns.

use serde::Serialize;

/// Counters for one run, logged at the end and returned to the caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// Records older than `function.max_record_age` (dead-lettered, not run).
    pub expired: u64,
    pub files: u64,
    pub commits: u64,
    /// Kafka records skipped because a commit marker already covers them.
    pub skipped_committed: u64,
    /// AMQP messages not run because their `message_id` was already processed.
    pub duplicates: u64,
}

impl JobStats {
    /// Adds the counters of one batch.
    pub(crate) fn add_batch(&mut self, batch: &JobStats) {
        self.records_in += batch.records_in;
        self.rows_out += batch.rows_out;
        self.record_errors += batch.record_errors;
        self.batches += batch.batches;
        self.retries += batch.retries;
        self.bisections += batch.bisections;
        self.dead_letters += batch.dead_letters;
        self.expired += batch.expired;
    }
}
