//! `sluice invoke`: sample events through the job's function and schema, with no broker
//! and no store — the function author's loop.
//!
//! Each non-blank line of the input is one event's payload (origin: its line number).
//! Events are batched by `batch.max_records`, run through the function exactly as a
//! deployed job would (same sandbox, mode and encoding), and the rows decoded against
//! the output schema. Nothing is written anywhere.

use arrow_array::RecordBatch;
use bytes::Bytes;
use sluice_connectors::{Event, Origin};

use crate::function::FunctionRunner;
use crate::function::encode::encode_batch;
use crate::function::protocol::InvokeError;
use crate::output::decode::DecodeError;
use crate::output::partition::{PartitionError, split_by_partition};
use crate::spec::JobSpec;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("batch of sample lines {first}..={last}: {source}")]
    Function {
        first: u64,
        last: u64,
        source: InvokeError,
    },
    #[error(
        "batch of sample lines {first}..={last}: function output does not fit the output schema: {source}"
    )]
    Schema {
        first: u64,
        last: u64,
        source: DecodeError,
    },
    #[error("partitioning output: {0}")]
    Partition(#[from] PartitionError),
}

/// A record the function rejected with `$error`.
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
    pub errors: Vec<SampleRecordError>,
}

/// Splits NDJSON sample input into events, one per non-blank line.
pub fn sample_events(input: &[u8]) -> Vec<Event> {
    input
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Event::from_payload(
                Bytes::copy_from_slice(line),
                Origin::Sample { line: i as u64 + 1 },
            )
        })
        .collect()
}

/// Runs the sample through the job's function and schema.
pub async fn invoke_sample(spec: &JobSpec, events: &[Event]) -> Result<SampleReport, SampleError> {
    let mut runner = FunctionRunner::new(&spec.name, &spec.dir, &spec.function);
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
    for chunk in events.chunks(spec.batch.max_records.max(1)) {
        let first = chunk.first().map_or(0, |e| e.origin.position() as u64);
        let last = chunk.last().map_or(0, |e| e.origin.position() as u64);
        let input = encode_batch(chunk, spec.function.input);
        let output = runner
            .invoke(&input)
            .await
            .map_err(|source| SampleError::Function {
                first,
                last,
                source,
            })?;
        for error in &output.errors {
            let line = chunk
                .get(error.record)
                .map_or(0, |e| e.origin.position() as u64);
            report.errors.push(SampleRecordError {
                line,
                message: error.message.clone(),
            });
        }
        let batch = output
            .decode(&spec.output.schema)
            .map_err(|source| SampleError::Schema {
                first,
                last,
                source,
            })?;
        for (path, part) in split_by_partition(&batch, &spec.output.partition_by)? {
            *partitions.entry(path).or_default() += part.num_rows();
        }
        report.rows.push(batch);
    }
    report.partitions = partitions.into_iter().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_become_events_with_line_numbers() {
        let events = sample_events(b"{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}");
        let lines: Vec<_> = events.iter().map(|e| e.origin.clone()).collect();
        assert_eq!(
            lines,
            vec![
                Origin::Sample { line: 1 },
                Origin::Sample { line: 4 },
                Origin::Sample { line: 5 }
            ]
        );
        assert_eq!(&events[1].payload[..], b"{\"a\":2}");
    }
}
