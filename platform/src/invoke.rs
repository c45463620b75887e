//! `sluice invoke`: sample events through the job's function and schema, with no broker
//! and no store — the function author's loop.
//!
//! The input is read as the job's trigger reads its source ([`samples`]: CSV, JSON
//! arrays, gzip/zstd, envelopes with key, headers and timestamp). Events are batched by
//! `batch.max_records`, run through the function exactly as a deployed job would (same
//! sandbox, mode and encoding), and the rows decoded against the output schema. A batch
//! whose output does not fit the schema is split, as a running job splits it, until the
//! records behind the misfit rows are found; they are reported as the dead letters they
//! would become, and the rest of the sample goes on. Nothing is written anywhere.

mod samples;

pub use samples::{SampleInputError, SampleSource, read_samples};

use arrow_array::RecordBatch;
use sluice_connectors::Event;

use crate::function::FunctionRunner;
use crate::function::encode::encode_batch;
use crate::function::protocol::InvokeError;
use crate::output::decode::DecodeError;
use crate::output::partition::{PartitionError, split_by_partition};
use crate::spec::{BatchSpec, JobSpec};

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("batch of sample lines {first}..={last}: {source}")]
    Function {
        first: u64,
        last: u64,
        source: InvokeError,
    },
    #[error("partitioning output: {0}")]
    Partition(#[from] PartitionError),
}

/// A record the function rejected with `$error`, or whose output does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRecordError {
    /// 1-based line of the sample input.
    pub line: u64,
    pub message: String,
}

/// What the job would have written.
#[derive(Debug, Default)]
pub struct SampleReport {
    pub records: usize,
    /// Output rows with every column, in output order.
    pub rows: Vec<RecordBatch>,
    /// Row count per Hive partition path (`""` when the job is not partitioned), sorted.
    pub partitions: Vec<(String, usize)>,
    /// Records the function rejected with `$error`.
    pub errors: Vec<SampleRecordError>,
    /// Records whose output does not fit the output schema: a running job sends them to
    /// the dead-letter destination with this reason.
    pub dead_letters: Vec<SampleRecordError>,
}

/// Runs the sample through the job's function and schema.
pub async fn invoke_sample(spec: &JobSpec, events: &[Event]) -> Result<SampleReport, SampleError> {
    let mut runner =
        FunctionRunner::new(&spec.name, &spec.dir, &spec.function).with_secrets(&spec.secrets);
    let result = run_batches(spec, &mut runner, events).await;
    runner.shutdown().await;
    result
}

async fn run_batches(
    spec: &JobSpec,
    runner: &mut FunctionRunner,
    events: &[Event],
) -> Result<SampleReport, SampleError> {
    let mut report = SampleReport {
        records: events.len(),
        ..SampleReport::default()
    };
    let mut partitions = std::collections::BTreeMap::<String, usize>::new();
    // Records the trigger's reader could not read never reach the function (as in `run`).
    let (unreadable, readable): (Vec<Event>, Vec<Event>) = events
        .iter()
        .cloned()
        .partition(|event| event.unreadable.is_some());
    for event in &unreadable {
        report.dead_letters.push(SampleRecordError {
            line: line_of(event),
            message: format!(
                "unreadable record: {}",
                event.unreadable.as_deref().unwrap_or_default()
            ),
        });
    }
    for chunk in cut_batches(&readable, &spec.batch) {
        let mut pending = vec![chunk];
        // Depth first, first half first: rows come out in input order.
        while let Some(part) = pending.pop() {
            match run_part(spec, runner, part).await? {
                Ok((batch, errors)) => {
                    report.errors.extend(errors);
                    for (path, rows) in split_by_partition(&batch, &spec.output.partition_by)? {
                        *partitions.entry(path).or_default() += rows.num_rows();
                    }
                    report.rows.push(batch);
                }
                Err(misfit) if part.len() == 1 => report.dead_letters.push(SampleRecordError {
                    line: line_of(&part[0]),
                    message: format!("function output does not fit the output schema: {misfit}"),
                }),
                Err(_) => {
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
        }
    }
    report.partitions = partitions.into_iter().collect();
    Ok(report)
}

/// Cuts events into batches as the batcher does: at `max_records`, at `max_bytes`, and
/// before an event that would take a batch past `max_bytes` (an event larger than that
/// is a batch of its own). `max_wait` plays no part: samples are all there at once.
fn cut_batches<'a>(events: &'a [Event], spec: &BatchSpec) -> Vec<&'a [Event]> {
    let max_records = spec.max_records.max(1);
    let max_bytes = usize::try_from(spec.max_bytes).unwrap_or(usize::MAX).max(1);
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, event) in events.iter().enumerate() {
        let size = event.size_bytes();
        if index > start && bytes + size > max_bytes {
            batches.push(&events[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
        if index + 1 - start >= max_records || bytes >= max_bytes {
            batches.push(&events[start..=index]);
            (start, bytes) = (index + 1, 0);
        }
    }
    if start < events.len() {
        batches.push(&events[start..]);
    }
    batches
}

type PartOutput = (RecordBatch, Vec<SampleRecordError>);

/// Runs one batch: its rows and `$error` rejections, or why its rows do not fit the schema.
async fn run_part(
    spec: &JobSpec,
    runner: &mut FunctionRunner,
    part: &[Event],
) -> Result<Result<PartOutput, DecodeError>, SampleError> {
    let first = part.first().map_or(0, line_of);
    let last = part.last().map_or(0, line_of);
    let input = encode_batch(part, spec.function.input);
    let output = runner
        .invoke(&input)
        .await
        .map_err(|source| SampleError::Function {
            first,
            last,
            source,
        })?;
    let errors = output
        .errors
        .iter()
        .map(|error| SampleRecordError {
            line: part.get(error.record).map_or(0, line_of),
            message: error.message.clone(),
        })
        .collect();
    Ok(output
        .decode(&spec.output.schema)
        .map(|batch| (batch, errors)))
}

fn line_of(event: &Event) -> u64 {
    event.origin.position() as u64
}

#[cfg(test)]
mod tests;
