//! `sluice head FILE.parquet [-n N]`: a quick look at output without other tools.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::invoke::with_offset_timezones;

pub fn head(file: &Path, rows: usize) -> anyhow::Result<ExitCode> {
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(opened)
        .with_context(|| format!("{} is not a Parquet file", file.display()))?
        .with_limit(rows)
        .build()
        .with_context(|| format!("reading {}", file.display()))?;
    let stdout = std::io::stdout().lock();
    let mut writer = arrow_json::LineDelimitedWriter::new(stdout);
    for batch in reader {
        let batch = batch.with_context(|| format!("reading {}", file.display()))?;
        writer.write(&with_offset_timezones(&batch)?)?;
    }
    writer.finish()?;
    writer.into_inner().flush()?;
    Ok(ExitCode::SUCCESS)
}
