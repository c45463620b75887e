//! Output rows (NDJSON, as a function wrote them) decoded into an Arrow record batch that
//! matches the job's [`OutputSchema`].
//!
//! Rows go straight from bytes into Arrow builders: arrow-json tokenizes the input onto a
//! tape, `decode_root` sorts each row's fields into the declared columns, and this module
//! supplies one strict decoder per column, so no row is ever materialised as a
//! `serde_json::Value`.
//!
//! What each column type accepts (anything else is an error naming the row and column):
//!
//! | type | JSON values accepted |
//! |---|---|
//! | `bool` | `true`, `false` |
//! | `int32`, `int64` | integral numbers (`3`, `3.0`, `3e2`) in range, read exactly (never rounded or clamped); strings are refused (`"3"` is not 3) |
//! | `float32`, `float64` | numbers in range; the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `utf8` | strings only (numbers are never turned into text) |
//! | `binary` | base64 strings, standard or URL-safe alphabet, padding optional |
//! | `date32` | `"YYYY-MM-DD"`; integers counting days since 1970-01-01; years 1 to 9999 |
//! | `timestamp_ms`, `timestamp_us` | RFC 3339 strings (a missing offset means UTC); integers in the column's unit since the epoch; years 1 to 9999 |
//!
//! `null` and missing fields are null; in a column declared `not null` they are errors.
//! Fields the schema does not declare are ignored.
//!
//! Invariants: on success the batch has exactly `row_count` rows and the schema's Arrow
//! form; on failure the error names the first (0-based) output row that cannot be decoded.
//! Finding that row re-decodes line by line, which happens only on the error path.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, PrimitiveBuilder, StringBuilder};
use arrow_array::timezone::Tz;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType, RecordBatch};
use arrow_json::reader::{ArrayDecoder, DecoderContext, DecoderFactory, Tape};
use arrow_schema::{ArrowError, DataType, FieldRef, SchemaRef, TimeUnit};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::decode_root::RowDecoder;
use super::json_value::{JsonValue, to_date32, to_f32, to_f64, to_integer, to_timestamp};
use super::schema::{ColumnType, OutputSchema};

/// Output that does not fit the schema: which row, which column (when one is to blame), and
/// why. The function's fault; retrying the same output cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// 0-based index of the output row (blank lines are not rows).
    pub row: usize,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(
                f,
                "output row {}, column {column:?}: {}",
                self.row, self.message
            ),
            None => write!(f, "output row {}: {}", self.row, self.message),
        }
    }
}

/// Decodes `rows`, NDJSON with one object per `\n`-terminated line, into a batch with the
/// schema's Arrow form. `row_count` is the number of rows the caller counted (non-blank
/// lines); a different number of decoded rows is an error.
///
/// CPU-bound; callers on an async runtime run it on a blocking thread.
pub fn decode_rows(
    schema: &OutputSchema,
    rows: &[u8],
    row_count: usize,
) -> Result<RecordBatch, DecodeError> {
    let arrow_schema = schema.arrow_schema();
    let failure = Arc::new(OnceLock::new());
    match decode_all(&arrow_schema, rows, row_count, &failure) {
        Ok(batch) if batch.num_rows() == row_count => Ok(batch),
        Ok(batch) => Err(first_failing_line(&arrow_schema, rows, None).unwrap_or(DecodeError {
            row: batch.num_rows().min(row_count),
            column: None,
            message: format!(
                "decoded {} rows where {row_count} were expected; each output row must be one JSON object on its own line",
                batch.num_rows()
            ),
        })),
        Err(error) => Err(locate_error(&arrow_schema, rows, failure.get(), error)),
    }
}

/// Rows the decoder buffers before emitting a batch; bounds what a wrong `row_count`
/// can make it allocate up front.
const MAX_DECODE_BATCH_ROWS: usize = 128 * 1024;

/// The fast path: every row in one pass (in batches of at most
/// [`MAX_DECODE_BATCH_ROWS`], concatenated).
fn decode_all(
    schema: &SchemaRef,
    rows: &[u8],
    row_count: usize,
    failure: &Arc<OnceLock<ColumnFailure>>,
) -> Result<RecordBatch, ArrowError> {
    let batch_size = row_count.clamp(1, MAX_DECODE_BATCH_ROWS);
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(batch_size)
        .with_decoder_factory(Arc::new(StrictColumns {
            failure: failure.clone(),
        }))
        .build_decoder()?;
    let mut batches = Vec::new();
    let mut offset = 0;
    let mut rows_before = 0;
    while offset < rows.len() {
        let read = decoder.decode(&rows[offset..])?;
        if read == 0 && decoder.is_empty() {
            return Err(ArrowError::JsonError("the decoder made no progress".into()));
        }
        offset += read;
        if offset < rows.len() || decoder.len() >= batch_size {
            // The decoder stops once it holds a full batch; empty it and go on.
            if let Some(batch) = flush_with_offset(&mut decoder, failure, rows_before)? {
                rows_before += batch.num_rows();
                batches.push(batch);
            }
        }
    }
    if let Some(batch) = flush_with_offset(&mut decoder, failure, rows_before)? {
        batches.push(batch);
    }
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema.clone())),
        1 => Ok(batches.swap_remove(0)),
        _ => arrow_select::concat::concat_batches(schema, &batches),
    }
}

fn flush_with_offset(
    decoder: &mut arrow_json::reader::Decoder,
    failure: &Arc<OnceLock<ColumnFailure>>,
    rows_before: usize,
) -> Result<Option<RecordBatch>, ArrowError> {
    decoder.flush().inspect_err(|_| {
        // Column decoders count rows from the start of the flushed batch.
        if let Some(found) = failure.get() {
            let _ = found.row_offset.set(rows_before);
        }
    })
}

/// The error path: find the first row that fails, decoding line by line (up to `limit`,
/// the row the fast path blamed, when it blamed one; an earlier row may fail in another
/// column). `None` when every line on its own decodes.
fn first_failing_line(
    schema: &SchemaRef,
    rows: &[u8],
    limit: Option<usize>,
) -> Option<DecodeError> {
    rows.split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .enumerate()
        .take_while(|(row, _)| limit.is_none_or(|limit| *row <= limit))
        .find_map(|(row, line)| decode_line(schema, line, row).err())
}

fn locate_error(
    schema: &SchemaRef,
    rows: &[u8],
    fast_failure: Option<&ColumnFailure>,
    fast_error: ArrowError,
) -> DecodeError {
    let blamed = fast_failure.map(|f| (f, f.row + f.row_offset.get().copied().unwrap_or(0)));
    if let Some(error) = first_failing_line(schema, rows, blamed.map(|(_, row)| row)) {
        return error;
    }
    match blamed {
        // Lines and rows disagree (several objects on one line); trust the fast path.
        Some((found, row)) => DecodeError {
            row,
            column: Some(found.column.clone()),
            message: found.message.clone(),
        },
        None => DecodeError {
            row: 0,
            column: None,
            message: format!(
                "the output could not be decoded ({}) and no single line shows why; each output row must be one JSON object on its own line",
                arrow_message(&fast_error)
            ),
        },
    }
}

fn decode_line(schema: &SchemaRef, line: &[u8], row: usize) -> Result<(), DecodeError> {
    let failure = Arc::new(OnceLock::new());
    let outcome = (|| {
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(2)
            .with_decoder_factory(Arc::new(StrictColumns {
                failure: failure.clone(),
            }))
            .build_decoder()?;
        let read = decoder.decode(line)?;
        if read < line.len() || decoder.len() > 1 {
            return Ok(false);
        }
        decoder.flush().map(|_| true)
    })();
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => Err(DecodeError {
            row,
            column: None,
            message: "more than one JSON value on one line; each output row must be one JSON object on its own line".into(),
        }),
        Err(error) => Err(match failure.get() {
            Some(found) => DecodeError {
                row,
                column: Some(found.column.clone()),
                message: found.message.clone(),
            },
            None => DecodeError {
                row,
                column: None,
                message: format!("not a JSON object: {}", arrow_message(&error)),
            },
        }),
    }
}

fn arrow_message(error: &ArrowError) -> String {
    match error {
        ArrowError::JsonError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// The first column value a decoder rejected, recorded beside the `ArrowError` that
/// arrow-json passes up (which carries only text).
#[derive(Debug)]
struct ColumnFailure {
    /// Row within the flushed batch.
    row: usize,
    /// Rows in batches flushed before it, set by the caller once the flush fails.
    row_offset: OnceLock<usize>,
    column: String,
    message: String,
}

/// Supplies a [`StrictColumn`] for every declared column type.
#[derive(Debug)]
struct StrictColumns {
    failure: Arc<OnceLock<ColumnFailure>>,
}

impl DecoderFactory for StrictColumns {
    fn make_default_decoder(
        &self,
        ctx: &DecoderContext,
        field: &FieldRef,
        is_nullable: bool,
    ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
        let ty = match field.data_type() {
            DataType::Boolean => ColumnType::Bool,
            DataType::Int32 => ColumnType::Int32,
            DataType::Int64 => ColumnType::Int64,
            DataType::Float32 => ColumnType::Float32,
            DataType::Float64 => ColumnType::Float64,
            DataType::Utf8 => ColumnType::Utf8,
            DataType::Binary => ColumnType::Binary,
            DataType::Date32 => ColumnType::Date32,
            DataType::Timestamp(TimeUnit::Millisecond, _) => ColumnType::TimestampMs,
            DataType::Timestamp(TimeUnit::Microsecond, _) => ColumnType::TimestampUs,
            // No column is a struct: this is the root, the rows.
            DataType::Struct(fields) => return Ok(Some(Box::new(RowDecoder::new(ctx, fields)?))),
            // Anything undeclared keeps arrow-json's own decoder.
            _ => return Ok(None),
        };
        Ok(Some(Box::new(StrictColumn {
            column: field.name().clone(),
            ty,
            data_type: field.data_type().clone(),
            nullable: is_nullable,
            failure: self.failure.clone(),
        })))
    }
}

/// Decodes one column's values from the tape, strictly (see the module table).
struct StrictColumn {
    column: String,
    ty: ColumnType,
    data_type: DataType,
    nullable: bool,
    failure: Arc<OnceLock<ColumnFailure>>,
}

impl ArrayDecoder for StrictColumn {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        match self.ty {
            ColumnType::Bool => self.decode_bool(tape, pos),
            ColumnType::Int32 => self.decode_primitive::<Int32Type>(tape, pos, |v| {
                to_integer(v).and_then(|i| i32::try_from(i).ok())
            }),
            ColumnType::Int64 => self.decode_primitive::<Int64Type>(tape, pos, to_integer),
            ColumnType::Float32 => self.decode_primitive::<Float32Type>(tape, pos, to_f32),
            ColumnType::Float64 => self.decode_primitive::<Float64Type>(tape, pos, to_f64),
            ColumnType::Utf8 => self.decode_utf8(tape, pos),
            ColumnType::Binary => self.decode_binary(tape, pos),
            ColumnType::Date32 => self.decode_primitive::<Date32Type>(tape, pos, to_date32),
            ColumnType::TimestampMs => {
                let utc: Tz = "+00:00".parse()?;
                self.decode_primitive::<TimestampMillisecondType>(tape, pos, |v| {
                    to_timestamp(v, &utc, TimeUnit::Millisecond)
                })
            }
            ColumnType::TimestampUs => {
                let utc: Tz = "+00:00".parse()?;
                self.decode_primitive::<TimestampMicrosecondType>(tape, pos, |v| {
                    to_timestamp(v, &utc, TimeUnit::Microsecond)
                })
            }
        }
    }
}

impl StrictColumn {
    fn decode_primitive<T: ArrowPrimitiveType>(
        &self,
        tape: &Tape<'_>,
        pos: &[u32],
        convert: impl Fn(&JsonValue<'_>) -> Option<T::Native>,
    ) -> Result<ArrayRef, ArrowError> {
        let mut builder =
            PrimitiveBuilder::<T>::with_capacity(pos.len()).with_data_type(self.data_type.clone());
        for (row, p) in pos.iter().enumerate() {
            match JsonValue::read(tape, *p) {
                JsonValue::Null => {
                    self.check_null(row, *p)?;
                    builder.append_null();
                }
                value => match convert(&value) {
                    Some(native) => builder.append_value(native),
                    None => return Err(self.reject(row, &value)),
                },
            }
        }
        Ok(Arc::new(builder.finish()))
    }

    fn decode_bool(&self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = BooleanBuilder::with_capacity(pos.len());
        for (row, p) in pos.iter().enumerate() {
            match JsonValue::read(tape, *p) {
                JsonValue::Null => {
                    self.check_null(row, *p)?;
                    builder.append_null();
                }
                JsonValue::Bool(b) => builder.append_value(b),
                value => return Err(self.reject(row, &value)),
            }
        }
        Ok(Arc::new(builder.finish()))
    }

    fn decode_utf8(&self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        // The exact size of the column's text up front: a guess too small regrows (and
        // copies) the buffer several times per batch for long values such as URLs.
        let text_bytes = pos
            .iter()
            .map(|p| match JsonValue::read(tape, *p) {
                JsonValue::String(s) => s.len(),
                _ => 0,
            })
            .sum();
        let mut builder = StringBuilder::with_capacity(pos.len(), text_bytes);
        for (row, p) in pos.iter().enumerate() {
            match JsonValue::read(tape, *p) {
                JsonValue::Null => {
                    self.check_null(row, *p)?;
                    builder.append_null();
                }
                JsonValue::String(s) => builder.append_value(s),
                value => return Err(self.reject(row, &value)),
            }
        }
        Ok(Arc::new(builder.finish()))
    }

    fn decode_binary(&self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut builder = BinaryBuilder::with_capacity(pos.len(), pos.len() * 16);
        let mut scratch = Vec::new();
        for (row, p) in pos.iter().enumerate() {
            match JsonValue::read(tape, *p) {
                JsonValue::Null => {
                    self.check_null(row, *p)?;
                    builder.append_null();
                }
                value @ JsonValue::String(s) => {
                    scratch.clear();
                    if BASE64_STANDARD.decode_vec(s, &mut scratch).is_err() {
                        scratch.clear();
                        BASE64_URL_SAFE
                            .decode_vec(s, &mut scratch)
                            .map_err(|_| self.reject(row, &value))?;
                    }
                    builder.append_value(&scratch);
                }
                value => return Err(self.reject(row, &value)),
            }
        }
        Ok(Arc::new(builder.finish()))
    }

    /// A null is fine unless the column is declared `not null`. Tape position 0 is
    /// arrow-json's null sentinel, which is where a missing field points.
    fn check_null(&self, row: usize, p: u32) -> Result<(), ArrowError> {
        if self.nullable {
            return Ok(());
        }
        let what = if p == 0 { "missing" } else { "null" };
        Err(self.fail(row, format!("{what}, but the column is declared not null")))
    }

    fn reject(&self, row: usize, value: &JsonValue<'_>) -> ArrowError {
        self.fail(
            row,
            format!("expected {}, got {}", expected(self.ty), value.describe()),
        )
    }

    fn fail(&self, row: usize, message: String) -> ArrowError {
        let error = ArrowError::JsonError(format!("column {:?}: {message}", self.column));
        let _ = self.failure.set(ColumnFailure {
            row,
            row_offset: OnceLock::new(),
            column: self.column.clone(),
            message,
        });
        error
    }
}

fn expected(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "a boolean",
        ColumnType::Int32 => "an integer that fits in 32 bits",
        ColumnType::Int64 => "an integer that fits in 64 bits",
        ColumnType::Float32 => "a number that fits in 32 bits",
        ColumnType::Float64 => "a number",
        ColumnType::Utf8 => "a string",
        ColumnType::Binary => "a base64 string",
        ColumnType::Date32 => "a date in years 1 to 9999 (\"YYYY-MM-DD\" or days since 1970-01-01)",
        ColumnType::TimestampMs | ColumnType::TimestampUs => "a timestamp in years 1 to 9999",
    }
}

const BASE64_CONFIG: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::STANDARD, BASE64_CONFIG);
const BASE64_URL_SAFE: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::URL_SAFE, BASE64_CONFIG);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on unexpected errors
#[path = "tests/decode.rs"]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on unexpected errors
#[path = "tests/decode_generated.rs"]
mod generated_tests;
