//! `sluice invoke JOB_DIR [--input FILE]`: rows that would be written go to stdout as
//! NDJSON; a summary and the per-record errors go to stderr.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use arrow_array::cast::AsArray as _;
use arrow_array::types::{TimestampMicrosecondType, TimestampMillisecondType};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema, TimeUnit};
use sluice_platform::invoke::{invoke_sample, sample_events};
use sluice_platform::spec::load_job;

use crate::report::error_chain;

pub async fn invoke(job_dir: &Path, input: Option<&Path>) -> anyhow::Result<ExitCode> {
    let spec = match load_job(job_dir) {
        Ok(spec) => spec,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let bytes = match input {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading events from standard input")?;
            bytes
        }
    };
    let events = sample_events(&bytes);
    let report = invoke_sample(&spec, &events)
        .await
        .map_err(|error| anyhow::anyhow!("{}", spec.redact(&error_chain(&error.into()))))?;

    let stdout = std::io::stdout().lock();
    let mut writer = arrow_json::LineDelimitedWriter::new(stdout);
    for batch in &report.rows {
        writer
            .write(&with_offset_timezones(batch)?)
            .context("printing rows")?;
    }
    writer.finish().context("printing rows")?;
    writer.into_inner().flush().context("printing rows")?;

    let rows: usize = report.rows.iter().map(|b| b.num_rows()).sum();
    let mut stderr = std::io::stderr().lock();
    writeln!(
        stderr,
        "{} records in, {rows} rows out, {} rejected",
        report.records,
        report.errors.len(),
    )?;
    for (path, count) in &report.partitions {
        let shown = if path.is_empty() {
            "(unpartitioned)"
        } else {
            path
        };
        writeln!(stderr, "  {shown}: {count} rows")?;
    }
    for error in &report.errors {
        let message = spec.redact(&error.message);
        writeln!(stderr, "  rejected line {}: {message}", error.line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Arrow's JSON writer formats only offset time zones without the tz database; our
/// timestamps are UTC, so relabel `UTC` as `+00:00` (metadata only, values unchanged).
pub fn with_offset_timezones(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| -> ArrayRef {
            match column.data_type() {
                DataType::Timestamp(TimeUnit::Millisecond, Some(_)) => Arc::new(
                    column
                        .as_primitive::<TimestampMillisecondType>()
                        .clone()
                        .with_timezone("+00:00"),
                ),
                DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Arc::new(
                    column
                        .as_primitive::<TimestampMicrosecondType>()
                        .clone()
                        .with_timezone("+00:00"),
                ),
                _ => column.clone(),
            }
        })
        .collect::<Vec<_>>();
    let fields = columns
        .iter()
        .zip(batch.schema().fields())
        .map(|(column, field)| {
            field
                .as_ref()
                .clone()
                .with_data_type(column.data_type().clone())
        })
        .collect::<Vec<_>>();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).context("printing rows")
}
