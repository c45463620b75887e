//! The input side of `encoding = "arrow"`: a batch's NDJSON records turned into one Arrow
//! IPC stream (schema, one record batch, end-of-stream marker).
//!
//! - `input = "value"`: one row per record; the columns are `function.input_schema` when
//!   declared, else inferred from the batch (so a batch's schema may differ from the
//!   previous one's; flat records by `infer_arrow` without building a JSON value each,
//!   others by arrow-json). Fields the schema does not declare are dropped.
//! - `input = "envelope"`: one row per record with the envelope's fields as columns:
//!   `value` (a struct of the value's columns, declared or inferred as above),
//!   `value_encoding`, `key`, `key_encoding` (utf8), `headers` (map utf8 → utf8),
//!   `timestamp_ms` (int64) and `origin` (a struct, inferred).
//!
//! A record that cannot become a row (not a JSON object, or a value that does not fit a
//! declared column) fails the whole conversion: the invocation fails before the function
//! starts, and the caller's split of the batch isolates the record.
//!
//! Invariants: the stream holds exactly `records` rows in batch order, in one record batch.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_json::ReaderBuilder;
use arrow_json::reader::Decoder;
use arrow_json::reader::infer_json_schema_from_seekable;
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};

use super::encode::EncodedBatch;
use super::infer_arrow::infer_flat;
use crate::spec::InputMode;

/// Why a batch could not be turned into an Arrow IPC stream: a record that does not fit.
#[derive(Debug, thiserror::Error)]
#[error("input records do not fit the arrow input schema: {0}")]
pub struct ArrowInputError(#[from] ArrowError);

/// Converts `batch` (NDJSON, as [`super::encode_batch`] made it) into one Arrow IPC
/// stream with `batch.records` rows.
pub fn ndjson_to_arrow(
    batch: &EncodedBatch,
    input_schema: Option<&SchemaRef>,
    mode: InputMode,
) -> Result<EncodedBatch, ArrowInputError> {
    let schema = match mode {
        InputMode::Value => match input_schema {
            Some(schema) => schema.clone(),
            None => match infer_flat(&batch.bytes, batch.records) {
                Ok(Some(schema)) => Arc::new(schema),
                // Nested or unusual records: arrow-json's inference, and its error.
                Ok(None) | Err(_) => infer(&batch.bytes)?,
            },
        },
        InputMode::Envelope => envelope_schema(&batch.bytes, input_schema)?,
    };
    let rows = decode(&batch.bytes, schema.clone(), batch.records)?;
    let mut bytes = Vec::with_capacity(batch.bytes.len() + 1024);
    let mut writer = StreamWriter::try_new(&mut bytes, &schema)?;
    writer.write(&rows)?;
    writer.finish()?;
    drop(writer);
    Ok(EncodedBatch {
        bytes,
        records: batch.records,
    })
}

fn infer(ndjson: &[u8]) -> Result<SchemaRef, ArrowError> {
    let (schema, _) = infer_json_schema_from_seekable(Cursor::new(ndjson), None)?;
    Ok(Arc::new(schema))
}

/// The envelope's columns; `value` as declared, or inferred with `origin`.
fn envelope_schema(
    ndjson: &[u8],
    input_schema: Option<&SchemaRef>,
) -> Result<SchemaRef, ArrowError> {
    let inferred = infer(ndjson)?;
    let inferred_struct = |name: &str| match inferred.field_with_name(name) {
        Ok(field) if matches!(field.data_type(), DataType::Struct(_)) => field.data_type().clone(),
        _ => DataType::Struct(Fields::empty()),
    };
    let value = match input_schema {
        Some(schema) => DataType::Struct(schema.fields().clone()),
        None => inferred_struct("value"),
    };
    let headers = DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    );
    Ok(Arc::new(Schema::new(vec![
        Field::new("value", value, true),
        Field::new("value_encoding", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("key_encoding", DataType::Utf8, true),
        Field::new("headers", headers, false),
        Field::new("timestamp_ms", DataType::Int64, true),
        Field::new("origin", inferred_struct("origin"), false),
    ])))
}

/// Gives `ndjson` to `decoder` until it takes no more; returns what it left (nothing
/// unless the bytes hold more rows than its batch size).
pub(super) fn feed<'a>(decoder: &mut Decoder, ndjson: &'a [u8]) -> Result<&'a [u8], ArrowError> {
    let mut rest = ndjson;
    while !rest.is_empty() {
        let consumed = decoder.decode(rest)?;
        if consumed == 0 {
            break;
        }
        rest = &rest[consumed..];
    }
    Ok(rest)
}

fn decode(ndjson: &[u8], schema: SchemaRef, records: usize) -> Result<RecordBatch, ArrowError> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(records.max(1))
        .build_decoder()?;
    let rest = feed(&mut decoder, ndjson)?;
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema));
    if batch.num_rows() != records || !rest.is_empty() {
        return Err(ArrowError::JsonError(format!(
            "decoded {} rows from {records} records",
            batch.num_rows()
        )));
    }
    Ok(batch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_ipc::reader::StreamReader;
    use bytes::Bytes;
    use sluice_connectors::{Event, Origin};

    use super::*;
    use crate::function::encode_batch;

    fn events(payloads: &[&str]) -> Vec<Event> {
        payloads
            .iter()
            .map(|payload| {
                Event::from_payload(
                    Bytes::copy_from_slice(payload.as_bytes()),
                    Origin::Sample { line: 1 },
                )
            })
            .collect()
    }

    fn read(stream: &[u8]) -> Vec<RecordBatch> {
        StreamReader::try_new(Cursor::new(stream), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn values_become_rows_with_an_inferred_schema() {
        let batch = encode_batch(
            &events(&[r#"{"a":1,"b":"x"}"#, r#"{"a":2}"#]),
            InputMode::Value,
        );
        let arrow = ndjson_to_arrow(&batch, None, InputMode::Value).unwrap();
        assert_eq!(arrow.records, 2);
        let batches = read(&arrow.bytes);
        assert_eq!(batches.len(), 1);
        let rows = &batches[0];
        assert_eq!(rows.num_rows(), 2);
        let a = rows
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(a.values(), &[1, 2]);
        assert!(rows.column_by_name("b").unwrap().is_null(1));
    }

    #[test]
    fn a_declared_schema_picks_and_types_the_columns() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let batch = encode_batch(&events(&[r#"{"a":1,"b":"x"}"#]), InputMode::Value);
        let arrow = ndjson_to_arrow(&batch, Some(&schema), InputMode::Value).unwrap();
        let rows = &read(&arrow.bytes)[0];
        assert_eq!(rows.schema(), schema);
        let bad = encode_batch(&events(&[r#"{"a":"not a number"}"#]), InputMode::Value);
        let error = ndjson_to_arrow(&bad, Some(&schema), InputMode::Value).unwrap_err();
        assert!(error.to_string().contains("input schema"), "{error}");
    }

    #[test]
    fn records_that_are_not_objects_are_refused() {
        let batch = encode_batch(&events(&["plain text"]), InputMode::Value);
        assert!(ndjson_to_arrow(&batch, None, InputMode::Value).is_err());
    }

    #[test]
    fn envelopes_carry_metadata_columns() {
        let mut event = events(&[r#"{"a":1}"#]).remove(0);
        event.key = Some(Bytes::from_static(b"k"));
        event.timestamp_ms = Some(7);
        let batch = encode_batch(&[event], InputMode::Envelope);
        let arrow = ndjson_to_arrow(&batch, None, InputMode::Envelope).unwrap();
        let rows = &read(&arrow.bytes)[0];
        let names: Vec<_> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "value",
                "value_encoding",
                "key",
                "key_encoding",
                "headers",
                "timestamp_ms",
                "origin"
            ]
        );
        assert_eq!(rows.column(2).as_string::<i32>().value(0), "k");
        let value = rows.column(0).as_struct();
        assert_eq!(
            value
                .column_by_name("a")
                .unwrap()
                .as_primitive::<Int64Type>()
                .value(0),
            1
        );
    }
}
