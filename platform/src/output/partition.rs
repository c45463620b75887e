//! Hive-style partitioning: rows are grouped by the values of the job's `partition_by`
//! columns and each group goes under `col=value/…` below the output prefix.
//!
//! Invariants: a partition path never leaves the output prefix. Every segment is
//! `escaped name` `=` `escaped value`, where escaping (Hive's `FileUtils.escapePathName`)
//! percent-encodes `/`, `\`, control characters, `=`, `%` and the other characters Hive
//! escapes, so a segment can never be empty, `.`, `..`, or contain a separator; unicode is
//! kept as is. Null and empty values go to [`HIVE_DEFAULT_PARTITION`], as in Hive and
//! Spark. Partition columns are not stored in the files themselves (readers take them
//! from the path), and rows keep their order within a group.
//!
//! A folder name is always a valid object name on every store: an escaped value longer
//! than [`MAX_FOLDER_VALUE_BYTES`] (file systems refuse names over 255 bytes, S3 keys over
//! 1,024) is shortened deterministically to its first [`SHORTENED_PREFIX_BYTES`] bytes,
//! `~`, and the 32 hex digits of the FNV-1a 128-bit hash of the whole value (see
//! [`partition_folder_value`]), so equal values always share a folder and different
//! values practically never do.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions::{as_datetime, date32_to_datetime};
use arrow_array::types::{
    Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef, TimeUnit};

/// The directory value for null and empty partition values (Hive's and Spark's name).
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Escaped values longer than this many bytes are shortened (see the module docs).
pub const MAX_FOLDER_VALUE_BYTES: usize = 128;
/// How many bytes of the escaped value a shortened value keeps before the hash.
pub const SHORTENED_PREFIX_BYTES: usize = 64;

/// Splitting a batch failed. These are internal errors (the job spec was validated against
/// the schema); retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("partition column {column:?} is not in the output batch")]
    UnknownColumn { column: String },
    #[error("partition column {column:?} is listed twice in partition_by")]
    DuplicateColumn { column: String },
    #[error(
        "a batch of {rows} rows is too large to partition (limit {})",
        u32::MAX
    )]
    TooManyRows { rows: usize },
    #[error("failed to build the batch of partition {partition:?}: {source}")]
    Arrow {
        partition: String,
        #[source]
        source: ArrowError,
    },
}

/// Escapes `value` for use as a path segment value, Hive-style: control characters and
/// `"#%'*/:=?\{[]^` and DEL become `%XX` (uppercase hex); everything else, unicode
/// included, is kept. The empty string becomes [`HIVE_DEFAULT_PARTITION`].
pub fn escape_partition_value(value: &str) -> String {
    if value.is_empty() {
        return HIVE_DEFAULT_PARTITION.to_string();
    }
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if needs_escape(c) {
            // Every escaped character is ASCII, so one byte.
            let _ = write!(escaped, "%{:02X}", c as u32);
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// The folder value of `value`: [`escape_partition_value`], shortened when longer than
/// [`MAX_FOLDER_VALUE_BYTES`] to `<first escaped characters, at most
/// SHORTENED_PREFIX_BYTES bytes>~<FNV-1a 128 of the value, 32 lowercase hex digits>`.
/// The cut never splits a character or a `%XX` escape.
pub fn partition_folder_value(value: &str) -> String {
    let escaped = escape_partition_value(value);
    if escaped.len() <= MAX_FOLDER_VALUE_BYTES {
        return escaped;
    }
    let mut shortened = String::with_capacity(SHORTENED_PREFIX_BYTES + 33);
    let mut one = String::new();
    for c in value.chars() {
        one.clear();
        one.push(c);
        let piece = escape_partition_value(&one);
        if shortened.len() + piece.len() > SHORTENED_PREFIX_BYTES {
            break;
        }
        shortened.push_str(&piece);
    }
    let _ = write!(shortened, "~{:032x}", fnv1a_128(value.as_bytes()));
    shortened
}

/// FNV-1a with 128-bit state: simple, stable across versions and platforms.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Reverses [`escape_partition_value`] (not the default-partition mapping). `None` when
/// a `%` is not followed by two hex digits or the result is not UTF-8.
pub fn unescape_partition_value(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\u{0}'
            ..='\u{1F}'
                | '\u{7F}'
                | '"'
                | '#'
                | '%'
                | '\''
                | '*'
                | '/'
                | ':'
                | '='
                | '?'
                | '\\'
                | '{'
                | '['
                | ']'
                | '^'
    )
}

/// The unescaped text of `array[row]` as a partition value; `None` for null (the default
/// partition). Dates are `YYYY-MM-DD`, timestamps RFC 3339 in UTC with the column's
/// precision (`2024-01-01T12:00:00.000Z`), booleans `true`/`false`.
pub fn format_partition_value(array: &dyn Array, row: usize) -> Option<String> {
    if row >= array.len() || array.is_null(row) {
        return None;
    }
    let text = match array.data_type() {
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => array.as_string_view().value(row).to_string(),
        DataType::Date32 => {
            let days = array
                .as_primitive::<arrow_array::types::Date32Type>()
                .value(row);
            match date32_to_datetime(days) {
                Some(datetime) => datetime.format("%Y-%m-%d").to_string(),
                None => days.to_string(),
            }
        }
        DataType::Timestamp(unit, _) => format_timestamp(array, row, *unit),
        _ => {
            let formatter = ArrayFormatter::try_new(array, &FormatOptions::default()).ok()?;
            formatter.value(row).to_string()
        }
    };
    Some(text)
}

/// Timestamp values are UTC-normalised whatever the column's zone, so UTC is printed.
fn format_timestamp(array: &dyn Array, row: usize, unit: TimeUnit) -> String {
    let (value, datetime, pattern) = match unit {
        TimeUnit::Second => {
            let v = array.as_primitive::<TimestampSecondType>().value(row);
            (
                v,
                as_datetime::<TimestampSecondType>(v),
                "%Y-%m-%dT%H:%M:%SZ",
            )
        }
        TimeUnit::Millisecond => {
            let v = array.as_primitive::<TimestampMillisecondType>().value(row);
            let datetime = as_datetime::<TimestampMillisecondType>(v);
            (v, datetime, "%Y-%m-%dT%H:%M:%S%.3fZ")
        }
        TimeUnit::Microsecond => {
            let v = array.as_primitive::<TimestampMicrosecondType>().value(row);
            let datetime = as_datetime::<TimestampMicrosecondType>(v);
            (v, datetime, "%Y-%m-%dT%H:%M:%S%.6fZ")
        }
        TimeUnit::Nanosecond => {
            let v = array.as_primitive::<TimestampNanosecondType>().value(row);
            let datetime = as_datetime::<TimestampNanosecondType>(v);
            (v, datetime, "%Y-%m-%dT%H:%M:%S%.9fZ")
        }
    };
    match datetime {
        Some(datetime) => datetime.format(pattern).to_string(),
        None => value.to_string(),
    }
}

/// `schema` without the partition columns: the schema of the files.
pub fn file_schema(schema: &SchemaRef, partition_by: &[String]) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| !partition_by.iter().any(|p| p == f.name()))
        .cloned()
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Groups the rows of `batch` by their partition values. Returns, in order of first
/// appearance, `(relative Hive path, rows without the partition columns)`, e.g.
/// `("event_date=2024-01-01/country=US", …)`; rows keep their order within a group. With
/// no partition columns the whole batch is one group with the path `""`. An empty batch
/// gives no groups.
pub fn split_by_partition(
    batch: &RecordBatch,
    partition_by: &[String],
) -> Result<Vec<(String, RecordBatch)>, PartitionError> {
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let schema = batch.schema();
    let mut key_columns = Vec::with_capacity(partition_by.len());
    for (i, column) in partition_by.iter().enumerate() {
        if partition_by[..i].contains(column) {
            return Err(PartitionError::DuplicateColumn {
                column: column.clone(),
            });
        }
        let index = schema
            .index_of(column)
            .map_err(|_| PartitionError::UnknownColumn {
                column: column.clone(),
            })?;
        key_columns.push((escape_partition_value(column), batch.column(index)));
    }
    let out_schema = file_schema(&schema, partition_by);
    let kept: Vec<&ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| !partition_by.iter().any(|p| p == f.name()))
        .map(|(_, c)| c)
        .collect();

    if key_columns.is_empty() {
        let columns = kept.into_iter().cloned().collect();
        let whole = with_rows(out_schema, columns, batch.num_rows()).map_err(|source| {
            PartitionError::Arrow {
                partition: String::new(),
                source,
            }
        })?;
        return Ok(vec![(String::new(), whole)]);
    }

    let rows = u32::try_from(batch.num_rows()).map_err(|_| PartitionError::TooManyRows {
        rows: batch.num_rows(),
    })?;
    let mut group_of_key: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
    let mut key = String::new();
    for row in 0..rows {
        key.clear();
        for (i, (name, column)) in key_columns.iter().enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(name);
            key.push('=');
            match format_partition_value(column.as_ref(), row as usize) {
                Some(value) => key.push_str(&partition_folder_value(&value)),
                None => key.push_str(HIVE_DEFAULT_PARTITION),
            }
        }
        match group_of_key.get(key.as_str()) {
            Some(&group) => groups[group].1.push(row),
            None => {
                group_of_key.insert(key.clone(), groups.len());
                groups.push((key.clone(), vec![row]));
            }
        }
    }

    if groups.len() == 1 {
        let (path, _) = groups.swap_remove(0);
        let columns = kept.into_iter().cloned().collect();
        let whole = with_rows(out_schema, columns, batch.num_rows()).map_err(|source| {
            PartitionError::Arrow {
                partition: path.clone(),
                source,
            }
        })?;
        return Ok(vec![(path, whole)]);
    }

    groups
        .into_iter()
        .map(|(path, rows)| {
            let indices = UInt32Array::from(rows);
            let taken = kept
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|columns| with_rows(out_schema.clone(), columns, indices.len()));
            match taken {
                Ok(part) => Ok((path, part)),
                Err(source) => Err(PartitionError::Arrow {
                    partition: path,
                    source,
                }),
            }
        })
        .collect()
}

/// A batch that may have no columns left (every column a partition column).
fn with_rows(
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch, ArrowError> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, columns, &options)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on unexpected errors
#[path = "tests/partition.rs"]
mod tests;
