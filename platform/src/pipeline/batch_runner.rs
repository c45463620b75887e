//! One batch through the function: retries, bisection, dead letters. Runs as its own
//! task, so batches of different splits run concurrently; what it produces comes back as
//! a [`BatchOutcome`] that the pipeline applies in the split's order (see `dispatch`).
//! Each invocation borrows an instance for the call only (`leases`): input is encoded
//! before and output decoded after, while the instance runs other batches.
//!
//! ```text
//! records the source could not read (Event::unreadable) → dead-letter destination
//! records older than function.max_record_age → dead-letter destination, not the function
//! attempt the whole batch up to function.max_attempts times (backoff with jitter)
//! still failing because of its data (exit, crash, timeout, bad output)?
//!     split it in two and attempt each half once; keep splitting what fails
//!     a single record that still fails after max_attempts → dead-letter destination
//! failing for a reason no split can fix (the program cannot start), or shutdown
//!     → the job stops; nothing of the batch is acknowledged
//! ```
//!
//! Output is accepted per (sub-)batch, whole or not at all: its rows are kept for the
//! Parquet sink and the records the function rejected with `$error` become dead letters.
//! Output that does not fit the schema fails the attempt, so bisection isolates the input
//! record behind it, which goes to the dead letters with the column and reason (and its
//! original payload, so it can be replayed). A poison record never blocks its partition:
//! the rest of its batch commits. Nothing here touches the sink, the dead-letter sink or
//! the source: a batch's effects exist only once the pipeline applies its outcome.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use sluice_connectors::{CheckpointDelta, Classify, Event, SplitId};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::leases::Lender;
use super::observer::{
    AttemptCounts, AttemptIds, AttemptOutcome, AttemptStart, BatchObserver, BatchProbe,
};
use super::{JobError, JobStats, backoff};
use crate::batcher::Batch;
use crate::commit::message_ids::message_ids;
use crate::deadletter::DeadLetter;
use crate::function::encode::encode_batch;
use crate::function::protocol::FunctionOutput;
use crate::function::{InvokeError, wire_batch};
use crate::output::decode::DecodeError;
use crate::spec::JobSpec;

/// What every batch task of a job shares.
#[derive(Debug, Clone)]
pub(super) struct BatchContext {
    pub spec: Arc<JobSpec>,
    pub shutdown: CancellationToken,
    /// Told about every attempt, when the job has an observer.
    pub observer: Option<Arc<dyn BatchObserver>>,
    pub attempt_ids: AttemptIds,
    /// Where invocations borrow their instance.
    pub lender: Lender,
}

/// What a finished batch hands back: everything derived from its records, to be made
/// durable before its positions are acknowledged.
#[derive(Debug)]
pub(super) struct BatchOutcome {
    pub split: SplitId,
    pub checkpoint: CheckpointDelta,
    /// Output rows, in input order.
    pub rows: Vec<RecordBatch>,
    pub dead_letters: Vec<DeadLetter>,
    pub stats: JobStats,
    /// Init time (spawn → readiness) of each instance this batch started, when known.
    pub cold_starts: Vec<Option<Duration>>,
    /// The AMQP `message_id`s of the batch's records (recorded once its output is durable).
    pub message_ids: Vec<Arc<str>>,
}

/// How one attempt series over some records ended.
enum Attempt {
    Succeeded,
    Failed {
        message: String,
        attempts: u32,
        /// Whether the records may be at fault (bisecting can isolate them).
        data_fault: bool,
        /// The last attempt, reported by the caller once it knows whether its records
        /// went to the dead letters (only with an observer).
        report: Option<FailedReport>,
    },
}

/// A failed attempt still to be reported.
struct FailedReport {
    start: AttemptStart,
    /// The instance the attempt ran on, if one started.
    instance: Option<String>,
    outcome: AttemptOutcome,
    stderr_tail: String,
}

impl FailedReport {
    fn send(self, probe: &mut Option<BatchProbe>, events: &[Event], dead_letters: u64) {
        if let Some(probe) = probe {
            let counts = AttemptCounts {
                dead_letters,
                ..AttemptCounts::default()
            };
            probe.report(
                &self.start,
                self.instance.as_deref(),
                events,
                counts,
                self.outcome,
                &self.stderr_tail,
            );
        }
    }
}

/// Runs `batch` through the function (see the module docs).
pub(super) async fn run_batch(
    context: &BatchContext,
    batch: Batch,
) -> Result<BatchOutcome, JobError> {
    let spec = &context.spec;
    let split = batch.split();
    let records = batch.events.len();
    let mut outcome = BatchOutcome {
        split,
        checkpoint: batch.checkpoint,
        rows: Vec::new(),
        dead_letters: Vec::new(),
        stats: JobStats {
            batches: 1,
            records_in: records as u64,
            ..JobStats::default()
        },
        cold_starts: Vec::new(),
        message_ids: message_ids(&batch.events),
    };
    let max_attempts = spec.function.max_attempts.max(1);
    let mut probe = context
        .observer
        .as_ref()
        .map(|observer| BatchProbe::new(observer, &context.attempt_ids));
    let events = outcome.set_aside_unreadable(spec, batch.events, &mut probe);
    // Depth-first over halves, left first, so output keeps the input's order.
    let mut work = vec![(events, true)];
    while let Some((events, whole)) = work.pop() {
        let events = outcome.expire(spec, events, batch.opened_at, &mut probe);
        if events.is_empty() {
            continue;
        }
        // The whole batch and single records get every attempt; halves get one: they
        // exist because the batch kept failing, and the halving itself retries.
        let attempts = if whole || events.len() == 1 {
            max_attempts
        } else {
            1
        };
        match attempt(context, &events, attempts, &mut outcome, &mut probe).await {
            Attempt::Succeeded => {}
            Attempt::Failed {
                message,
                attempts,
                data_fault,
                report,
            } => {
                let stopping = !data_fault || context.shutdown.is_cancelled();
                if let Some(report) = report {
                    let dead_letters = u64::from(!stopping && events.len() == 1);
                    report.send(&mut probe, &events, dead_letters);
                }
                if stopping {
                    return Err(JobError::BatchFailed {
                        records,
                        positions: outcome.checkpoint.to_string(),
                        attempts,
                        last_error: message,
                    });
                }
                if let [event] = events.as_slice() {
                    warn!(job = %spec.name, origin = ?event.origin, attempts, error = %message, "record keeps failing the function; sending it to the dead-letter destination");
                    outcome
                        .dead_letters
                        .push(DeadLetter::new(event, &message, attempts));
                    outcome.stats.dead_letters += 1;
                    continue;
                }
                warn!(job = %spec.name, records = events.len(), first = ?events[0].origin, error = %message, "batch keeps failing; splitting it to isolate the records at fault");
                outcome.stats.bisections += 1;
                let mut left = events;
                let right = left.split_off(left.len() / 2);
                work.push((right, false));
                work.push((left, false));
            }
        }
    }
    Ok(outcome)
}

impl BatchOutcome {
    /// Moves the records the source could not read to the dead letters, with the
    /// source's reason; returns the others.
    fn set_aside_unreadable(
        &mut self,
        spec: &JobSpec,
        events: Vec<Event>,
        probe: &mut Option<BatchProbe>,
    ) -> Vec<Event> {
        if events.iter().all(|event| event.unreadable.is_none()) {
            return events;
        }
        let (unreadable, readable): (Vec<Event>, Vec<Event>) = events
            .into_iter()
            .partition(|event| event.unreadable.is_some());
        for event in &unreadable {
            let reason = event.unreadable.as_deref().unwrap_or_default();
            warn!(job = %spec.name, origin = ?event.origin, reason, "record cannot be read; sending it to the dead-letter destination");
            self.dead_letters.push(DeadLetter::new(event, reason, 0));
        }
        self.stats.dead_letters += unreadable.len() as u64;
        if let Some(probe) = probe {
            probe.set_aside(&unreadable, AttemptOutcome::Unreadable);
        }
        readable
    }

    /// Moves records older than `function.max_record_age` to the dead letters; returns
    /// the others. Age is measured from the record's timestamp, or from when its batch
    /// opened when it has none.
    fn expire(
        &mut self,
        spec: &JobSpec,
        events: Vec<Event>,
        opened_at: Instant,
        probe: &mut Option<BatchProbe>,
    ) -> Vec<Event> {
        let Some(max_age) = spec.function.max_record_age else {
            return events;
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let max_age_ms = max_age.as_millis() as i64;
        let batch_age = opened_at.elapsed();
        let (expired, live): (Vec<Event>, Vec<Event>) =
            events
                .into_iter()
                .partition(|event| match event.timestamp_ms {
                    Some(timestamp) => now_ms.saturating_sub(timestamp) > max_age_ms,
                    None => batch_age > max_age,
                });
        for event in &expired {
            let message = format!(
                "record is older than function.max_record_age ({}); not sent to the function",
                humantime::format_duration(max_age)
            );
            warn!(job = %spec.name, origin = ?event.origin, "record expired; sending it to the dead-letter destination");
            self.dead_letters.push(DeadLetter::new(event, &message, 0));
        }
        self.stats.expired += expired.len() as u64;
        self.stats.dead_letters += expired.len() as u64;
        if let Some(probe) = probe {
            probe.set_aside(&expired, AttemptOutcome::Expired);
        }
        live
    }
}

/// Invokes the function on `events` up to `max_attempts` times with backoff, and on
/// success keeps the output in `outcome`. Input that does not fit the function's input
/// schema, and output that does not fit the output schema, fail at once (the same input
/// would fail the same way), so bisection finds the record behind them.
async fn attempt(
    context: &BatchContext,
    events: &[Event],
    max_attempts: u32,
    outcome: &mut BatchOutcome,
    probe: &mut Option<BatchProbe>,
) -> Attempt {
    let spec = &context.spec;
    let input = encode_batch(events, spec.function.input);
    let input = match wire_batch(&spec.function, &input) {
        Ok(input) => input,
        Err(error) => {
            let start = probe.as_ref().map(|_| BatchProbe::start_without_instance());
            let (message, report) = invoke_failure(spec, &error, start, None);
            return Attempt::Failed {
                message,
                attempts: 1,
                data_fault: error.is_transient(),
                report,
            };
        }
    };
    let mut attempt = 1;
    loop {
        let Some(mut lease) = context.lender.lease().await else {
            return Attempt::Failed {
                message: "internal error: the job stopped lending function instances before the batch could run".to_owned(),
                attempts: attempt,
                data_fault: false,
                report: None,
            };
        };
        let start = probe.as_ref().map(|_| BatchProbe::start(lease.runner()));
        let invoked = lease.runner().invoke_wire(&input).await;
        let instance = lease.runner().last_instance().map(str::to_owned);
        // The instance runs other batches while this one's output is decoded or its
        // retry waits. Failed calls count no records: they measure no throughput.
        lease.give_back(if invoked.is_ok() { events.len() } else { 0 });
        let error = match invoked {
            Ok(output) => {
                if output.cold_start {
                    outcome.cold_starts.push(output.init_time);
                }
                return match decode(spec, &output) {
                    Ok(rows) => {
                        if let (Some(probe), Some(start)) = (probe.as_mut(), &start) {
                            let counts = AttemptCounts {
                                rows_out: rows.num_rows() as u64,
                                rejected: output.errors.len() as u64,
                                dead_letters: 0,
                                init_time: output.init_time,
                                cold_start: Some(output.cold_start),
                            };
                            probe.report(
                                start,
                                instance.as_deref(),
                                events,
                                counts,
                                AttemptOutcome::Ok,
                                "",
                            );
                        }
                        outcome.accept(spec, rows, &output, events);
                        Attempt::Succeeded
                    }
                    Err(error) => Attempt::Failed {
                        message: spec
                            .redact(&format!(
                                "function output does not fit the output schema: {error}"
                            ))
                            .into_owned(),
                        attempts: attempt,
                        data_fault: true,
                        report: start.map(|start| FailedReport {
                            start,
                            instance,
                            outcome: AttemptOutcome::SchemaError,
                            stderr_tail: String::new(),
                        }),
                    },
                };
            }
            Err(error) => error,
        };
        let data_fault = error.is_transient();
        let (message, report) = invoke_failure(spec, &error, start, instance);
        if !data_fault || attempt >= max_attempts || context.shutdown.is_cancelled() {
            return Attempt::Failed {
                message,
                attempts: attempt,
                data_fault,
                report,
            };
        }
        if let Some(report) = report {
            report.send(probe, events, 0);
        }
        let backoff = backoff(spec.function.retry_backoff, attempt);
        warn!(job = %spec.name, attempt, max_attempts, records = events.len(), first = ?events[0].origin, error = %message, backoff_ms = backoff.as_millis() as u64, "batch failed; retrying");
        outcome.stats.retries += 1;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = context.shutdown.cancelled() => {}
        }
        attempt += 1;
    }
}

/// What a failed invocation (or its input's conversion) says: the message, to be logged,
/// dead-lettered and maybe the job's failure reason, so never with a secret; and the
/// report of the attempt, when it is observed (`start`).
fn invoke_failure(
    spec: &JobSpec,
    error: &InvokeError,
    start: Option<AttemptStart>,
    instance: Option<String>,
) -> (String, Option<FailedReport>) {
    let message = spec.redact(&error.to_string()).into_owned();
    let report = start.map(|start| FailedReport {
        start,
        instance,
        outcome: AttemptOutcome::of(error),
        stderr_tail: spec.redact(AttemptOutcome::stderr_tail(error)).into_owned(),
    });
    (message, report)
}

/// Decodes the output rows against the schema. CPU work: under `block_in_place`, so the
/// runtime's other tasks (the source's channel, signal handling) keep running on the
/// other worker threads.
fn decode(spec: &JobSpec, output: &FunctionOutput) -> Result<RecordBatch, DecodeError> {
    let schema = &spec.output.schema;
    tokio::task::block_in_place(|| output.decode(schema))
}

impl BatchOutcome {
    /// Keeps a successful attempt's rows and turns its rejected records into dead letters.
    fn accept(
        &mut self,
        spec: &JobSpec,
        rows: RecordBatch,
        output: &FunctionOutput,
        events: &[Event],
    ) {
        self.stats.rows_out += rows.num_rows() as u64;
        if rows.num_rows() > 0 {
            self.rows.push(rows);
        }
        for error in &output.errors {
            if let Some(event) = events.get(error.record) {
                let message = spec.redact(&error.message);
                warn!(job = %spec.name, record = error.record, origin = ?event.origin, %message, "function rejected a record; sending it to the dead-letter destination");
                self.dead_letters.push(DeadLetter::new(event, &message, 1));
            }
        }
        self.stats.record_errors += output.errors.len() as u64;
        self.stats.dead_letters += output.errors.len() as u64;
    }
}
