//! `sluice head FILE.parquet [-n N]`: a quick look at output without other tools.
//!
//! Every line printed is one JSON object. A date or timestamp column holding a value no
//! calendar can show (far outside years 1–9999: Sluice refuses to write those, but older
//! files and other writers may hold them) is printed as text, such values as their raw
//! number and unit, e.g. `"9223372036854775807 ms since 1970-01-01 (outside the calendar)"`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions::{as_datetime, date32_to_datetime};
use arrow_array::types::{
    ArrowTimestampType, Date32Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Schema, TimeUnit};
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
        writer.write(&with_offset_timezones(&printable(&batch)?)?)?;
    }
    writer.finish()?;
    writer.into_inner().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `batch` with every date or timestamp column that holds a value outside the calendar
/// turned into text (see the module docs); other columns are kept as they are.
fn printable(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let schema = batch.schema();
    let mut changed = false;
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut fields = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(schema.fields()) {
        match temporal_as_text(column.as_ref()) {
            Some(text) => {
                changed = true;
                fields.push(field.as_ref().clone().with_data_type(DataType::Utf8));
                columns.push(text);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    if !changed {
        return Ok(batch.clone());
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).context("printing rows")
}

/// The column as text when it is a date or timestamp column holding a value outside the
/// calendar; `None` otherwise.
fn temporal_as_text(column: &dyn Array) -> Option<ArrayRef> {
    match column.data_type() {
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>();
            as_text(column, |i| {
                let value = days.value(i);
                date32_to_datetime(value)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .ok_or_else(|| outside(i64::from(value), "days"))
            })
        }
        DataType::Timestamp(TimeUnit::Second, _) => timestamps::<TimestampSecondType>(column, "s"),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            timestamps::<TimestampMillisecondType>(column, "ms")
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamps::<TimestampMicrosecondType>(column, "µs")
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            timestamps::<TimestampNanosecondType>(column, "ns")
        }
        _ => None,
    }
}

fn timestamps<T: ArrowTimestampType>(column: &dyn Array, unit: &str) -> Option<ArrayRef> {
    let values = column.as_primitive::<T>();
    let zoned = matches!(column.data_type(), DataType::Timestamp(_, Some(_)));
    as_text(column, |i| {
        let value = values.value(i);
        let datetime = as_datetime::<T>(value).ok_or_else(|| outside(value, unit))?;
        let text = datetime.format("%Y-%m-%dT%H:%M:%S%.f").to_string();
        Ok(if zoned { text + "+00:00" } else { text })
    })
}

fn outside(value: i64, unit: &str) -> String {
    format!("{value} {unit} since 1970-01-01 (outside the calendar)")
}

/// Text for each row when at least one value is outside the calendar (`Err` carries its
/// text); `None` when every value prints as it is.
fn as_text(
    column: &dyn Array,
    text_of: impl Fn(usize) -> Result<String, String>,
) -> Option<ArrayRef> {
    let valid = |i: usize| column.is_valid(i);
    if (0..column.len()).all(|i| !valid(i) || text_of(i).is_ok()) {
        return None;
    }
    let texts: StringArray = (0..column.len())
        .map(|i| valid(i).then(|| text_of(i).unwrap_or_else(|outside| outside)))
        .collect();
    Some(Arc::new(texts))
}
