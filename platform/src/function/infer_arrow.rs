//! The Arrow input schema of a batch inferred from arrow-json's tape, for
//! `encoding = "arrow"` without `function.input_schema`.
//!
//! arrow-json's own inference (`infer_json_schema`) builds a `serde_json::Value` for every
//! record: an allocation per key, per string and per object. For the common batch — every
//! record a flat JSON object of scalars — this walks the tokens arrow-json's decoder makes
//! anyway (its tape, no value built) and gives the same schema by the same rules:
//!
//! - a field's type from the non-null values it has anywhere in the batch: integers that
//!   fit an `i64` → `Int64` (`-0` and larger integers are floats, as serde_json reads
//!   them), other numbers → `Float64`, `Int64` with `Float64` → `Float64`, booleans →
//!   `Boolean`, strings → `Utf8`, any other mix → `Utf8`; only nulls → `Null`;
//! - every field nullable, in the order serde_json's object map yields the keys of the
//!   record that first has them (sorted, unless serde_json preserves order).
//!
//! Anything else — a record that is not an object, a nested object or list, a key twice in
//! one record, a number beyond `f64` — returns `None`, and the caller uses arrow-json's inference, so the schema
//! (or the error) is exactly what that gives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{ArrayRef, StructArray};
use arrow_json::ReaderBuilder;
use arrow_json::reader::{ArrayDecoder, DecoderContext, DecoderFactory, Tape, TapeElement};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Schema};

use super::encode_arrow::feed;

/// The schema of `ndjson` (`records` lines), or `None` when the batch is not all flat
/// objects of scalars (see the module doc). An error only for JSON the tokenizer refuses.
pub(super) fn infer_flat(ndjson: &[u8], records: usize) -> Result<Option<Schema>, ArrowError> {
    let inferred = Arc::new(Mutex::new(None));
    let factory = Arc::new(InferFactory(inferred.clone()));
    let mut decoder = ReaderBuilder::new(Arc::new(Schema::empty()))
        .with_batch_size(records.max(1))
        .with_decoder_factory(factory)
        .build_decoder()?;
    if !feed(&mut decoder, ndjson)?.is_empty() {
        return Ok(None);
    }
    decoder.flush()?;
    let schema = match inferred.lock() {
        Ok(mut slot) => slot.take().flatten(),
        Err(_) => None,
    };
    Ok(schema)
}

/// Hands the root of the (empty) schema to an [`InferDecoder`].
#[derive(Debug)]
struct InferFactory(Arc<Mutex<Option<Option<Schema>>>>);

impl DecoderFactory for InferFactory {
    fn make_default_decoder(
        &self,
        _ctx: &DecoderContext,
        field: &FieldRef,
        _is_nullable: bool,
    ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
        if field.name().is_empty()
            && matches!(field.data_type(), DataType::Struct(f) if f.is_empty())
        {
            return Ok(Some(Box::new(InferDecoder(self.0.clone()))));
        }
        Ok(None)
    }
}

/// Walks every row's tokens, stores the schema, and returns the empty rows asked for.
struct InferDecoder(Arc<Mutex<Option<Option<Schema>>>>);

impl ArrayDecoder for InferDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let schema = infer_rows(tape, pos);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(schema);
        }
        Ok(Arc::new(StructArray::new_empty_fields(pos.len(), None)))
    }
}

/// Kinds of non-null values seen in one field.
const INT: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 4;
const UTF8: u8 = 8;

struct Column<'a> {
    name: &'a str,
    kinds: u8,
    /// The last row the field was seen in: a second time in the same row is a duplicate.
    last_row: usize,
}

fn infer_rows(tape: &Tape<'_>, pos: &[u32]) -> Option<Schema> {
    let sorted = serde_json_sorts_keys();
    let mut columns: Vec<Column<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut new_keys = Vec::new();
    for (row, &start) in pos.iter().enumerate() {
        let TapeElement::StartObject(end) = tape.get(start) else {
            return None;
        };
        let mut at = start + 1;
        // Keys usually come in the same order in every record: try the next column first.
        let mut guess = 0;
        while at < end {
            let TapeElement::String(key) = tape.get(at) else {
                return None;
            };
            let key = tape.get_string(key);
            let value = at + 1;
            let kind = match tape.get(value) {
                TapeElement::Null => 0,
                TapeElement::True | TapeElement::False => BOOL,
                TapeElement::String(_) => UTF8,
                TapeElement::Number(text) => number_kind(tape.get_string(text))?,
                _ => return None,
            };
            let column = match columns.get(guess) {
                Some(column) if column.name == key => guess,
                _ => match index.get(key) {
                    Some(&column) => column,
                    None => {
                        index.insert(key, columns.len());
                        new_keys.push(columns.len());
                        columns.push(Column {
                            name: key,
                            kinds: 0,
                            last_row: usize::MAX,
                        });
                        columns.len() - 1
                    }
                },
            };
            let entry = &mut columns[column];
            if entry.last_row == row {
                return None;
            }
            entry.last_row = row;
            entry.kinds |= kind;
            guess = column + 1;
            at = value + 1;
        }
        if sorted && new_keys.len() > 1 {
            sort_new_columns(&mut columns, &mut index, &new_keys);
        }
        new_keys.clear();
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|column| Field::new(column.name, data_type(column.kinds), true))
        .collect();
    Some(Schema::new(fields))
}

/// Orders the columns one record introduced (the last ones) by key, as a sorted map yields
/// them, and fixes their positions in `index`.
fn sort_new_columns<'a>(
    columns: &mut [Column<'a>],
    index: &mut HashMap<&'a str, usize>,
    new_keys: &[usize],
) {
    let first = new_keys[0];
    columns[first..].sort_by(|a, b| a.name.cmp(b.name));
    for (position, column) in columns.iter().enumerate().skip(first) {
        index.insert(column.name, position);
    }
}

/// `Int64` for what serde_json reads as an `i64`, `Float64` for every other number;
/// `None` for a number serde_json refuses (beyond `f64`'s range).
fn number_kind(text: &str) -> Option<u8> {
    let integral = !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'));
    match text.parse::<i64>() {
        // serde_json reads `-0` as the float -0.0.
        Ok(0) if integral && text.starts_with('-') => Some(FLOAT),
        Ok(_) if integral => Some(INT),
        _ => text
            .parse::<f64>()
            .is_ok_and(f64::is_finite)
            .then_some(FLOAT),
    }
}

fn data_type(kinds: u8) -> DataType {
    match kinds {
        0 => DataType::Null,
        INT => DataType::Int64,
        FLOAT => DataType::Float64,
        k if k == INT | FLOAT => DataType::Float64,
        BOOL => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// Whether `serde_json::Map` iterates keys sorted (its default) rather than in insertion
/// order (its `preserve_order` feature, which another crate may switch on).
fn serde_json_sorts_keys() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(r#"{"b":0,"a":0}"#)
            .is_ok_and(|map| map.keys().next().is_some_and(|key| key == "a"))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Cursor;

    use arrow_json::reader::infer_json_schema_from_seekable;

    use super::*;

    fn both(lines: &[&str]) -> (Option<Schema>, Result<Schema, String>) {
        let ndjson: String = lines.iter().map(|line| format!("{line}\n")).collect();
        let flat = infer_flat(ndjson.as_bytes(), lines.len()).unwrap();
        let arrow = infer_json_schema_from_seekable(Cursor::new(ndjson.as_bytes()), None)
            .map(|(schema, _)| schema)
            .map_err(|error| error.to_string());
        (flat, arrow)
    }

    #[test]
    fn flat_batches_get_arrow_json_s_schema() {
        let batches: &[&[&str]] = &[
            &[
                r#"{"b":1,"a":"x","c":true}"#,
                r#"{"a":"y","b":2.5,"d":null}"#,
            ],
            &[
                r#"{"n":null}"#,
                r#"{"n":null,"m":1}"#,
                r#"{"z":1,"y":2,"x":3}"#,
            ],
            &[r#"{"i":9223372036854775807,"j":-9223372036854775808,"k":9223372036854775808}"#],
            &[r#"{"zero":-0,"e":1e3,"E":2E1,"neg":-5,"f":0.0}"#],
            &[
                r#"{"mix":1}"#,
                r#"{"mix":"s"}"#,
                r#"{"other":true}"#,
                r#"{"other":1}"#,
            ],
            &[
                r#"{"int":1}"#,
                r#"{"int":null}"#,
                r#"{"late":null}"#,
                r#"{"late":false}"#,
            ],
            &[r#"{"esc\"aped":1,"ünï":"ç"}"#, r#"{}"#],
            &[
                r#"{"same":1,"order":2}"#,
                r#"{"order":3,"same":4,"new2":1,"new1":2}"#,
            ],
        ];
        for lines in batches {
            let (flat, arrow) = both(lines);
            assert_eq!(flat, Some(arrow.unwrap()), "{lines:?}");
        }
    }

    #[test]
    fn other_batches_are_left_to_arrow_json() {
        let batches: &[&[&str]] = &[
            &[r#"{"a":1}"#, r#""text""#],
            &[r#"{"a":{"b":1}}"#],
            &[r#"{"a":[1,2]}"#],
            &[r#"{"a":1,"a":"x"}"#],
            &[r#"[1]"#],
            &[r#"{"huge":1e400}"#],
        ];
        for lines in batches {
            assert_eq!(both(lines).0, None, "{lines:?}");
        }
    }
}
