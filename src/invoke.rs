//! `sluice invoke JOB_DIR [--input FILE] [--envelopes]`: rows that would be written go to
//! stdout as NDJSON; a summary, the per-record errors and the would-be dead letters go
//! to stderr. The input is read as the job's trigger reads its source (see
//! `sluice_platform::invoke`).

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use arrow_array::cast::AsArray as _;
use arrow_array::types::{TimestampMicrosecondType, TimestampMillisecondType};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema, TimeUnit};
use sluice_platform::invoke::{SampleSource, invoke_sample, read_samples};
use sluice_platform::spec::load_job;

use crate::report::error_chain;

pub async fn invoke(
    job_dir: &Path,
    input: Option<&Path>,
    envelopes: bool,
) -> anyhow::Result<ExitCode> {
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
    let name = input
        .and_then(|path| path.file_name())
        .and_then(|name| name.to_str());
    let source = SampleSource { name, envelopes };
    let events = match read_samples(&spec, &source, &bytes) {
        Ok(events) => events,
        Err(error) => {
            eprintln!("sluice invoke: {}", spec.redact(&error.to_string()));
            return Ok(ExitCode::FAILURE);
        }
    };
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
        "{} records in, {rows} rows out, {} rejected, {} dead letters",
        report.records,
        report.errors.len(),
        report.dead_letters.len(),
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
    for letter in &report.dead_letters {
        let message = spec.redact(&letter.message);
        writeln!(stderr, "  dead letter line {}: {message}", letter.line)?;
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
