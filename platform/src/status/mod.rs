//! What a running job reports about itself: its state and why, its function instances,
//! cold starts, backlog and counters. The pipeline writes it; `sluice run --http ADDR`
//! serves it as JSON on `/status` and as Prometheus text on `/metrics` ([`http`]).
//!
//! | state      | meaning                                                            |
//! |------------|--------------------------------------------------------------------|
//! | `starting` | recovering unfinished output, connecting the trigger               |
//! | `running`  | consuming and committing                                           |
//! | `degraded` | running, but a commit step keeps failing (store or broker outage); nothing is acknowledged until it succeeds; `reason` says which step and why |
//! | `stopped`  | stopped on request or because a finite source ended                |
//! | `failed`   | stopped by an error; `reason` says which                           |
//!
//! Invariant: a status is a snapshot for people and scrapers; nothing in the data path
//! reads it back.

pub mod http;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use stats::JobStats;

use crate::spec::secret::Secrets;

/// Cold-start durations kept for the percentiles.
const COLD_START_SAMPLES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Starting,
    Running,
    Degraded,
    Stopped,
    Failed,
}

/// A job's instances, as the pool sees them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Instances running a batch.
    pub busy: u32,
    /// The most instances that ran a batch at once since the job started: the
    /// concurrency it reached, which a sampled `busy` can miss.
    pub busy_peak: u32,
    /// Warm instances waiting for a batch.
    pub idle: u32,
    /// What the autoscaler wants now.
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    /// Process ids of the idle warm instances (busy ones are inside their batch).
    pub idle_pids: Vec<u32>,
}

/// Cold starts: instance spawn → readiness, reported apart from batch time (Lambda's
/// Init Duration).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ColdStartStatus {
    /// Instances started (exec mode: every batch).
    pub count: u64,
    /// Of those, instances that announced readiness, so their init time is known.
    pub measured: u64,
    pub last_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// One job's snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub state: JobState,
    /// Why the job is degraded, stopped or failed.
    pub reason: Option<String>,
    /// Milliseconds since the Unix epoch when `state` last changed.
    pub since_ms: u64,
    pub instances: InstanceStatus,
    pub cold_starts: ColdStartStatus,
    /// Records waiting at the source behind what was delivered, when the source knows.
    pub backlog: Option<u64>,
    /// Records queued in batches or in flight inside the platform.
    pub in_flight_records: u64,
    /// Records per second one busy instance handles, once measured.
    pub instance_rate: Option<f64>,
    pub stats: JobStats,
    /// Protections the host cannot give the job's function (`docs/security.md`); empty
    /// when it gets them all.
    pub missing_protections: Vec<String>,
    #[serde(skip)]
    cold_samples: VecDeque<Duration>,
}

impl JobStatus {
    fn new(job: &str) -> Self {
        Self {
            job: job.to_owned(),
            state: JobState::Starting,
            reason: None,
            since_ms: now_ms(),
            instances: InstanceStatus::default(),
            cold_starts: ColdStartStatus::default(),
            backlog: None,
            in_flight_records: 0,
            instance_rate: None,
            stats: JobStats::default(),
            missing_protections: Vec::new(),
            cold_samples: VecDeque::new(),
        }
    }

    /// Moves to `state` (keeping `since_ms` when the state and reason are unchanged).
    pub fn set_state(&mut self, state: JobState, reason: Option<String>) {
        if self.state != state || self.reason != reason {
            self.state = state;
            self.reason = reason;
            self.since_ms = now_ms();
        }
    }

    /// Counts a cold start, with its init time when the instance announced readiness.
    pub fn record_cold_start(&mut self, init: Option<Duration>) {
        self.cold_starts.count += 1;
        let Some(init) = init else {
            return;
        };
        self.cold_starts.measured += 1;
        if self.cold_samples.len() == COLD_START_SAMPLES {
            self.cold_samples.pop_front();
        }
        self.cold_samples.push_back(init);
        let mut sorted: Vec<Duration> = self.cold_samples.iter().copied().collect();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        self.cold_starts.last_ms = Some(ms(init));
        self.cold_starts.p50_ms = Some(ms(percentile(&sorted, 50)));
        self.cold_starts.p99_ms = Some(ms(percentile(&sorted, 99)));
        self.cold_starts.max_ms = sorted.last().copied().map(ms);
    }
}

/// The `p`th percentile (nearest rank) of a sorted, non-empty slice.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The statuses of every job of this process.
#[derive(Debug, Default)]
pub struct StatusBoard {
    jobs: Mutex<BTreeMap<String, JobStatus>>,
}

impl StatusBoard {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The handle a job's pipeline writes its status through (state `starting`).
    pub fn job(self: &Arc<Self>, job: &str) -> JobStatusHandle {
        self.lock()
            .entry(job.to_owned())
            .or_insert_with(|| JobStatus::new(job));
        JobStatusHandle {
            board: Arc::clone(self),
            job: job.to_owned(),
            secrets: Secrets::default(),
        }
    }

    /// Forgets a job (it was deleted).
    pub fn remove(&self, job: &str) {
        self.lock().remove(job);
    }

    /// Every job's snapshot, by name.
    pub fn snapshot(&self) -> Vec<JobStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobStatus>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes one job's status.
#[derive(Debug, Clone)]
pub struct JobStatusHandle {
    board: Arc<StatusBoard>,
    job: String,
    /// Masked in every `reason` ([`Self::masking`]).
    secrets: Secrets,
}

impl JobStatusHandle {
    /// A handle on a board of its own, for callers that serve no status.
    pub fn detached(job: &str) -> Self {
        StatusBoard::new().job(job)
    }

    pub fn update(&self, change: impl FnOnce(&mut JobStatus)) {
        let mut jobs = self.board.lock();
        let status = jobs
            .entry(self.job.clone())
            .or_insert_with(|| JobStatus::new(&self.job));
        change(status);
    }

    /// The handle masking `secrets` (the job's) in the reasons it publishes, which
    /// quote errors and so may quote a function's output or stderr.
    pub fn masking(mut self, secrets: &Secrets) -> Self {
        self.secrets = secrets.clone();
        self
    }

    /// Moves to `state`; `reason` is published with the job's secrets masked.
    pub fn set_state(&self, state: JobState, reason: Option<String>) {
        let reason = reason.map(|reason| match self.secrets.redact(&reason) {
            std::borrow::Cow::Borrowed(_) => reason,
            std::borrow::Cow::Owned(masked) => masked,
        });
        self.update(|status| status.set_state(state, reason));
    }

    pub fn snapshot(&self) -> Option<JobStatus> {
        self.board.lock().get(&self.job).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_start_percentiles_use_measured_init_times_only() {
        let board = StatusBoard::new();
        let job = board.job("a");
        job.update(|s| {
            for ms in 1..=100 {
                s.record_cold_start(Some(Duration::from_millis(ms)));
            }
            s.record_cold_start(None);
        });
        let status = job.snapshot().unwrap();
        assert_eq!(status.cold_starts.count, 101);
        assert_eq!(status.cold_starts.measured, 100);
        assert_eq!(status.cold_starts.p50_ms, Some(50.0));
        assert_eq!(status.cold_starts.p99_ms, Some(99.0));
        assert_eq!(status.cold_starts.max_ms, Some(100.0));
        assert_eq!(status.cold_starts.last_ms, Some(100.0));
    }

    #[test]
    fn a_reason_is_published_with_the_jobs_secrets_masked() {
        let mut secrets = Secrets::default();
        secrets.insert("tok-0d4e8a61f5b2");
        let job = StatusBoard::new().job("a").masking(&secrets);
        job.set_state(
            JobState::Failed,
            Some("batch failed; stderr: token tok-0d4e8a61f5b2 refused".into()),
        );
        let reason = job.snapshot().unwrap().reason.unwrap();
        assert_eq!(reason, "batch failed; stderr: token *** refused");
    }

    #[test]
    fn state_changes_carry_their_reason() {
        let board = StatusBoard::new();
        let job = board.job("a");
        assert_eq!(job.snapshot().unwrap().state, JobState::Starting);
        job.set_state(
            JobState::Degraded,
            Some("upload output: connection refused".into()),
        );
        let status = job.snapshot().unwrap();
        assert_eq!(status.state, JobState::Degraded);
        assert!(status.reason.unwrap().contains("connection refused"));
        job.set_state(JobState::Running, None);
        assert_eq!(board.snapshot()[0].state, JobState::Running);
        assert_eq!(board.snapshot()[0].reason, None);
    }
}
