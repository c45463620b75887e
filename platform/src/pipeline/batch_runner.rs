//! One batch through the function: retries, bisection, dead letters.
//!
//! ```text
//! attempt the whole batch up to function.max_attempts times (backoff with jitter)
//! still failing because of its data (exit, crash, timeout, bad output)?
//!     split it in two and attempt each half once; keep splitting what fails
//!     a single record that still fails after max_attempts → dead-letter destination
//! failing for a reason no split can fix (the program cannot start), or shutdown
//!     → the job stops; nothing of the batch is acknowledged
//! ```
//!
//! Output is accepted per (sub-)batch, whole or not at all: its rows go to the Parquet
//! sink and the records the function rejected with `$error` to the dead letters. Output
//! that does not fit the schema fails the attempt, so bisection isolates the input record
//! behind it, which goes to the dead letters with the column and reason (and its original
//! payload, so it can be replayed). A poison record never blocks its partition: the rest
//! of its batch commits.

use arrow_array::RecordBatch;
use sluice_connectors::Event;
use tracing::warn;

use super::{JobError, Pipeline, backoff};
use crate::batcher::Batch;
use crate::deadletter::DeadLetter;
use crate::function::encode::encode_batch;
use crate::function::protocol::FunctionOutput;
use crate::output::decode::{DecodeError, decode_rows};

/// How one attempt series over some records ended.
enum Attempt {
    Succeeded,
    Failed {
        message: String,
        attempts: u32,
        /// Whether the records may be at fault (bisecting can isolate them).
        data_fault: bool,
    },
}

impl Pipeline<'_> {
    /// Runs `batch` through the function into the sink and dead letters, then adds its
    /// positions to the pending checkpoint.
    pub(super) async fn process(&mut self, batch: Batch) -> Result<(), JobError> {
        self.stats.batches += 1;
        self.stats.records_in += batch.events.len() as u64;
        let max_attempts = self.spec.function.max_attempts.max(1);
        let whole = 0..batch.events.len();
        // Depth-first over halves, left first, so output keeps the input's order.
        let mut work = vec![whole.clone()];
        while let Some(range) = work.pop() {
            // The whole batch and single records get every attempt; halves get one: they
            // exist because the batch kept failing, and the halving itself retries.
            let attempts = if range == whole || range.len() == 1 {
                max_attempts
            } else {
                1
            };
            let events = &batch.events[range.clone()];
            match self.attempt(events, attempts).await? {
                Attempt::Succeeded => {}
                Attempt::Failed {
                    message,
                    attempts,
                    data_fault,
                } => {
                    if !data_fault || self.shutdown.is_cancelled() {
                        return Err(JobError::BatchFailed {
                            records: batch.events.len(),
                            positions: batch.checkpoint.to_string(),
                            attempts,
                            last_error: message,
                        });
                    }
                    if let [event] = events {
                        warn!(job = %self.spec.name, origin = ?event.origin, attempts, error = %message, "record keeps failing the function; sending it to the dead-letter destination");
                        self.dead_letters
                            .push(DeadLetter::new(event, &message, attempts));
                        self.stats.dead_letters += 1;
                        continue;
                    }
                    let middle = range.start + range.len() / 2;
                    warn!(job = %self.spec.name, records = range.len(), first = ?events[0].origin, error = %message, "batch keeps failing; splitting it to isolate the records at fault");
                    self.stats.bisections += 1;
                    work.push(middle..range.end);
                    work.push(range.start..middle);
                }
            }
        }
        self.pending.extend(batch.checkpoint)?;
        Ok(())
    }

    /// Invokes the function on `events` up to `max_attempts` times with backoff, and on
    /// success hands the output to the sink and the dead letters. Output that does not fit
    /// the schema fails the attempt at once (the same input would give the same output), so
    /// bisection finds the record behind it.
    async fn attempt(&mut self, events: &[Event], max_attempts: u32) -> Result<Attempt, JobError> {
        let input = encode_batch(events, self.spec.function.input);
        let mut attempt = 1;
        loop {
            let error = match self.function.invoke(&input).await {
                Ok(output) => match self.decode(&output) {
                    Ok(rows) => {
                        self.accept(rows, &output, events)?;
                        return Ok(Attempt::Succeeded);
                    }
                    Err(error) => {
                        return Ok(Attempt::Failed {
                            message: format!(
                                "function output does not fit the output schema: {error}"
                            ),
                            attempts: attempt,
                            data_fault: true,
                        });
                    }
                },
                Err(error) => error,
            };
            let data_fault = error.is_retryable();
            let message = error.to_string();
            if !data_fault || attempt >= max_attempts || self.shutdown.is_cancelled() {
                return Ok(Attempt::Failed {
                    message,
                    attempts: attempt,
                    data_fault,
                });
            }
            let backoff = backoff(self.spec.function.retry_backoff, attempt);
            warn!(job = %self.spec.name, attempt, max_attempts, records = events.len(), first = ?events[0].origin, error = %message, backoff_ms = backoff.as_millis() as u64, "batch failed; retrying");
            self.stats.retries += 1;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.shutdown.cancelled() => {}
            }
            attempt += 1;
        }
    }

    /// Decodes the output rows against the schema. CPU work: under `block_in_place`, so the
    /// runtime's other tasks (the source's channel, signal handling) keep running on the
    /// other worker threads.
    fn decode(&self, output: &FunctionOutput) -> Result<RecordBatch, DecodeError> {
        let schema = &self.spec.output.schema;
        tokio::task::block_in_place(|| decode_rows(schema, &output.rows, output.row_count))
    }

    /// Side effects of a successful attempt: rows to the sink (Parquet encoding, CPU work,
    /// also under `block_in_place`), rejected records to the dead letters.
    fn accept(
        &mut self,
        rows: RecordBatch,
        output: &FunctionOutput,
        events: &[Event],
    ) -> Result<(), JobError> {
        // Batches never mix splits, so the first record's split is the batch's.
        let split = events[0].origin.split();
        let sink = &mut self.sink;
        tokio::task::block_in_place(|| sink.write(&split, &rows))?;
        self.stats.rows_out += rows.num_rows() as u64;
        for error in &output.errors {
            if let Some(event) = events.get(error.record) {
                warn!(job = %self.spec.name, record = error.record, origin = ?event.origin, message = %error.message, "function rejected a record; sending it to the dead-letter destination");
                self.dead_letters
                    .push(DeadLetter::new(event, &error.message, 1));
            }
        }
        self.stats.record_errors += output.errors.len() as u64;
        self.stats.dead_letters += output.errors.len() as u64;
        Ok(())
    }
}
