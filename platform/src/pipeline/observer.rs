//! What a job tells an observer about each batch attempt: one [`BatchAttempt`] per call
//! of the function (a whole batch, a retry, a bisected half, a single record), plus one
//! for records that went to the dead letters without reaching the function (unreadable,
//! expired).
//!
//! The observer is optional ([`super::JobRuntime::observer`]): `sluice run` has none and
//! pays nothing; `sluice serve` hands one that queues the attempts for the registry. It is
//! called on the batch's own task, after the attempt, so it must only queue and return.
//!
//! Accounting: over every attempt of a run, `rows_out + rejected + dead_letters` covers
//! each record that entered the job exactly once for a function that writes one row per
//! record; an attempt that failed and was retried or split has `dead_letters = 0`, and its
//! records appear again in the attempts that followed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sluice_connectors::Event;

use crate::function::{FunctionRunner, InvokeError};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Ok,
    /// The function exited with an error, or its preload failed.
    FunctionError,
    Timeout,
    /// Killed by a signal, the process limit, or an i/o error talking to it.
    Crash,
    /// Broke the output protocol or wrote too much.
    ProtocolError,
    /// Its output did not fit the output schema, or the input did not fit the input schema.
    SchemaError,
    KilledForMemory,
    /// The function could not be started (spawn or sandbox failed).
    NotStarted,
    /// Records the source could not read: straight to the dead letters.
    Unreadable,
    /// Records older than `function.max_record_age`: straight to the dead letters.
    Expired,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::FunctionError => "function_error",
            Self::Timeout => "timeout",
            Self::Crash => "crash",
            Self::ProtocolError => "protocol_error",
            Self::SchemaError => "schema_error",
            Self::KilledForMemory => "killed_for_memory",
            Self::NotStarted => "not_started",
            Self::Unreadable => "unreadable",
            Self::Expired => "expired",
        }
    }

    /// The outcome of a failed invocation.
    pub(crate) fn of(error: &InvokeError) -> Self {
        match error {
            InvokeError::Exit { .. } | InvokeError::Preload { .. } => Self::FunctionError,
            InvokeError::Timeout { .. } => Self::Timeout,
            InvokeError::Killed { .. } | InvokeError::ProcessLimit { .. } | InvokeError::Io(_) => {
                Self::Crash
            }
            InvokeError::Protocol { .. } | InvokeError::OutputTooLarge { .. } => {
                Self::ProtocolError
            }
            InvokeError::Input(_) => Self::SchemaError,
            InvokeError::MemoryLimit { .. } => Self::KilledForMemory,
            InvokeError::Spawn { .. }
            | InvokeError::Sandbox { .. }
            | InvokeError::Refused { .. } => Self::NotStarted,
        }
    }

    /// The stderr tail a failed invocation's error carries, if any.
    pub(crate) fn stderr_tail(error: &InvokeError) -> &str {
        match error {
            InvokeError::Exit { stderr_tail, .. }
            | InvokeError::Killed { stderr_tail, .. }
            | InvokeError::MemoryLimit { stderr_tail, .. }
            | InvokeError::ProcessLimit { stderr_tail, .. }
            | InvokeError::Preload { stderr_tail, .. } => stderr_tail,
            _ => "",
        }
    }
}

/// One batch attempt. See the module docs.
#[derive(Debug, Clone)]
pub struct BatchAttempt {
    /// Unique within the job: `{run}-{batch}.{attempt}`, the run unique per process start.
    pub id: String,
    /// The function instance that ran it (none when none started).
    pub instance: Option<String>,
    pub started: SystemTime,
    pub duration: Duration,
    /// The attempt started the instance (exec mode: always).
    pub cold_start: bool,
    /// Spawn → readiness of the instance, when this attempt saw it.
    pub init_time: Option<Duration>,
    /// Partition, queue or bucket.
    pub split: String,
    pub first_position: i64,
    pub last_position: i64,
    /// Records sent to the function (or set aside, for `unreadable` and `expired`).
    pub records_in: u64,
    pub rows_out: u64,
    /// Records the function rejected with `$error` (they go to the dead letters).
    pub rejected: u64,
    /// Other records this attempt sent to the dead letters: a single record that failed
    /// its last attempt, or the records set aside.
    pub dead_letters: u64,
    pub outcome: AttemptOutcome,
    /// The last lines of the function's stderr, masked (at most 4 KiB), when the failure
    /// quotes them; the observer may fill it from the function's log otherwise.
    pub stderr_tail: String,
}

/// Receives a job's batch attempts. See the module docs.
pub trait BatchObserver: Send + Sync + std::fmt::Debug {
    /// Called after each attempt, on the batch's task: queue and return, never wait.
    fn attempt(&self, attempt: BatchAttempt);
}

/// Numbers the batches of one run, for attempt ids.
#[derive(Debug, Clone)]
pub(super) struct AttemptIds {
    run_id: Arc<str>,
    batches: Arc<AtomicU64>,
}

impl AttemptIds {
    pub(super) fn new(run_id: &str) -> Self {
        // Two runs of a job in one process within a millisecond share a run id.
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        Self {
            run_id: format!("{run_id}-{run}").into(),
            batches: Arc::default(),
        }
    }

    fn next_batch(&self) -> String {
        let batch = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{batch}", self.run_id)
    }
}

/// One batch's view of the observer: numbers its attempts and builds their records. The
/// pipeline holds none when the job has no observer, so nothing here runs then.
#[derive(Debug)]
pub(super) struct BatchProbe {
    observer: Arc<dyn BatchObserver>,
    batch: String,
    attempts: u32,
}

/// The moment an attempt started.
#[derive(Debug)]
pub(super) struct AttemptStart {
    started: SystemTime,
    clock: Instant,
    cold_start: bool,
}

/// What an attempt produced, for its record.
#[derive(Debug, Default)]
pub(super) struct AttemptCounts {
    pub rows_out: u64,
    pub rejected: u64,
    pub dead_letters: u64,
    pub init_time: Option<Duration>,
    pub cold_start: Option<bool>,
}

impl BatchProbe {
    pub(super) fn new(observer: &Arc<dyn BatchObserver>, ids: &AttemptIds) -> Self {
        Self {
            observer: Arc::clone(observer),
            batch: ids.next_batch(),
            attempts: 0,
        }
    }

    pub(super) fn start(runner: &FunctionRunner) -> AttemptStart {
        AttemptStart {
            cold_start: runner.warm_pid().is_none(),
            ..Self::start_without_instance()
        }
    }

    /// An attempt that fails before it needs an instance.
    pub(super) fn start_without_instance() -> AttemptStart {
        AttemptStart {
            started: SystemTime::now(),
            clock: Instant::now(),
            cold_start: false,
        }
    }

    /// Reports an attempt over `events` (never empty).
    pub(super) fn report(
        &mut self,
        start: &AttemptStart,
        instance: Option<&str>,
        events: &[Event],
        counts: AttemptCounts,
        outcome: AttemptOutcome,
        stderr_tail: &str,
    ) {
        self.attempts += 1;
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        self.observer.attempt(BatchAttempt {
            id: format!("{}.{}", self.batch, self.attempts),
            instance: instance.map(str::to_owned),
            started: start.started,
            duration: start.clock.elapsed(),
            cold_start: counts.cold_start.unwrap_or(start.cold_start),
            init_time: counts.init_time,
            split: first.origin.split().to_string(),
            first_position: first.origin.position(),
            last_position: last.origin.position(),
            records_in: events.len() as u64,
            rows_out: counts.rows_out,
            rejected: counts.rejected,
            dead_letters: counts.dead_letters,
            outcome,
            stderr_tail: stderr_tail.to_owned(),
        });
    }

    /// Reports records that went to the dead letters without reaching the function.
    pub(super) fn set_aside(&mut self, events: &[Event], outcome: AttemptOutcome) {
        if events.is_empty() {
            return;
        }
        self.attempts += 1;
        let (first, last) = (&events[0], &events[events.len() - 1]);
        self.observer.attempt(BatchAttempt {
            id: format!("{}.{}", self.batch, self.attempts),
            instance: None,
            started: SystemTime::now(),
            duration: Duration::ZERO,
            cold_start: false,
            init_time: None,
            split: first.origin.split().to_string(),
            first_position: first.origin.position(),
            last_position: last.origin.position(),
            records_in: events.len() as u64,
            rows_out: 0,
            rejected: 0,
            dead_letters: events.len() as u64,
            outcome,
            stderr_tail: String::new(),
        });
    }
}
