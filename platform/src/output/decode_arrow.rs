//! Arrow output rows (from a function with `encoding = "arrow"`) made to match the job's
//! [`OutputSchema`].
//!
//! Columns are matched by name; columns the schema does not declare are ignored and a
//! declared column the answer lacks is null. A column of another type is cast when that
//! loses nothing: the cast must succeed for every value and casting the result back must
//! give the original values (so `int64` 3 fits an `int32` column, `float64` 2.0 an `int64`
//! one and microsecond timestamps a millisecond column when they are whole milliseconds;
//! 2.5 does not fit an integer column). Dictionary-encoded columns are read as their
//! values. Otherwise the error names the column, as for NDJSON rows.
//!
//! Invariants: on success the batch has the schema's Arrow form and as many rows as the
//! input batches together, in order.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, make_array, new_null_array};
use arrow_cast::{CastOptions, can_cast_types, cast_with_options};
use arrow_schema::{DataType, Field, TimeUnit};

use super::decode::{DecodeError, decode_rows};
use super::schema::OutputSchema;
use crate::function::FunctionOutput;
use crate::function::protocol_arrow::ArrowRows;

impl FunctionOutput {
    /// The output rows as a batch of the job's output schema: NDJSON rows decoded, Arrow
    /// rows cast where that loses nothing.
    pub fn decode(&self, schema: &OutputSchema) -> Result<RecordBatch, DecodeError> {
        match &self.arrow {
            Some(ArrowRows(batches)) => conform_batches(schema, batches),
            None => decode_rows(schema, &self.rows, self.row_count),
        }
    }
}

/// Casts each of `batches` to the schema (see the module doc) and concatenates them.
pub fn conform_batches(
    schema: &OutputSchema,
    batches: &[RecordBatch],
) -> Result<RecordBatch, DecodeError> {
    let arrow_schema = schema.arrow_schema();
    let mut conformed = Vec::with_capacity(batches.len());
    let mut first_row = 0;
    for batch in batches {
        let columns = arrow_schema
            .fields()
            .iter()
            .map(|field| conform_column(batch, field, first_row))
            .collect::<Result<Vec<_>, _>>()?;
        let batch =
            RecordBatch::try_new(arrow_schema.clone(), columns).map_err(|error| DecodeError {
                row: first_row,
                column: None,
                message: error.to_string(),
            })?;
        first_row += batch.num_rows();
        conformed.push(batch);
    }
    if conformed.len() == 1 {
        return Ok(conformed.remove(0));
    }
    arrow_select::concat::concat_batches(&arrow_schema, &conformed).map_err(|error| DecodeError {
        row: 0,
        column: None,
        message: error.to_string(),
    })
}

fn conform_column(
    batch: &RecordBatch,
    field: &Field,
    first_row: usize,
) -> Result<ArrayRef, DecodeError> {
    let error = |row: usize, message: String| DecodeError {
        row: first_row + row,
        column: Some(field.name().clone()),
        message,
    };
    let Some(column) = batch.column_by_name(field.name()) else {
        if field.is_nullable() || batch.num_rows() == 0 {
            return Ok(new_null_array(field.data_type(), batch.num_rows()));
        }
        return Err(error(
            0,
            "missing from the arrow answer, and the column is declared not null".into(),
        ));
    };
    let column = lossless_cast(column, field.data_type()).map_err(|message| error(0, message))?;
    if !field.is_nullable() && column.null_count() > 0 {
        let row = (0..column.len())
            .find(|&row| column.is_null(row))
            .unwrap_or(0);
        return Err(error(row, "null in a column declared not null".into()));
    }
    Ok(column)
}

/// `column` as `target`, or why that would lose information.
fn lossless_cast(column: &ArrayRef, target: &DataType) -> Result<ArrayRef, String> {
    let from = column.data_type();
    if from == target {
        return Ok(column.clone());
    }
    if *from == DataType::Null {
        return Ok(new_null_array(target, column.len()));
    }
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let refused = || format!("arrow type {from} cannot be cast to {target} without loss");
    if let DataType::Timestamp(unit, timezone) = target {
        return to_timestamp(column, *unit, timezone.clone()).ok_or_else(refused);
    }
    if let DataType::Dictionary(_, values) = from {
        let plain = cast_with_options(column, values, &strict).map_err(|e| e.to_string())?;
        return lossless_cast(&plain, target);
    }
    if !can_cast_types(from, target) || !can_cast_types(target, from) {
        return Err(refused());
    }
    let cast = cast_with_options(column, target, &strict).map_err(|_| refused())?;
    let back = cast_with_options(&cast, from, &strict).map_err(|_| refused())?;
    if back.to_data() != column.to_data() {
        return Err(refused());
    }
    Ok(cast)
}

/// Integers (taken as `unit` since the epoch) and timestamps of any unit and time zone
/// (Arrow stores UTC instants; a zone is a label) as timestamps in `unit`, labelled
/// `timezone`; `None` when a value would lose precision or overflow.
fn to_timestamp(column: &ArrayRef, unit: TimeUnit, timezone: Option<Arc<str>>) -> Option<ArrayRef> {
    let values = match column.data_type() {
        DataType::Timestamp(from, _) => {
            let raw = column
                .to_data()
                .into_builder()
                .data_type(DataType::Int64)
                .build()
                .ok()?;
            rescale(&Int64Array::from(raw), *from, unit)?
        }
        from if from.is_integer() => {
            let strict = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            let cast = cast_with_options(column, &DataType::Int64, &strict).ok()?;
            cast.as_primitive::<Int64Type>().clone()
        }
        _ => return None,
    };
    let data = values
        .into_data()
        .into_builder()
        .data_type(DataType::Timestamp(unit, timezone))
        .build()
        .ok()?;
    Some(make_array(data))
}

fn rescale(values: &Int64Array, from: TimeUnit, to: TimeUnit) -> Option<Int64Array> {
    let per_second = |unit| match unit {
        TimeUnit::Second => 1_i64,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let (from, to) = (per_second(from), per_second(to));
    let rescaled = if to >= from {
        values.try_unary::<_, Int64Type, ()>(|value| value.checked_mul(to / from).ok_or(()))
    } else {
        let factor = from / to;
        values.try_unary::<_, Int64Type, ()>(|value| {
            (value % factor == 0).then_some(value / factor).ok_or(())
        })
    };
    rescaled.ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use arrow_array::types::{Int32Type, TimestampMillisecondType};
    use arrow_array::{
        DictionaryArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
        types::Int8Type,
    };
    use arrow_schema::Schema;

    use super::*;

    fn schema(decls: &[(&str, &str)]) -> OutputSchema {
        let decls: Vec<(String, String)> = decls
            .iter()
            .map(|(name, decl)| (name.to_string(), decl.to_string()))
            .collect();
        OutputSchema::from_declarations(&decls).unwrap()
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, array)| array).collect(),
        )
        .unwrap()
    }

    #[test]
    fn exact_columns_pass_and_missing_nullable_ones_are_null() {
        let out = schema(&[("a", "int64"), ("b", "utf8")]);
        let input = batch(vec![
            ("extra", Arc::new(StringArray::from(vec!["x", "y"]))),
            ("a", Arc::new(Int64Array::from(vec![1, 2]))),
        ]);
        let result = conform_batches(&out, &[input.clone(), input]).unwrap();
        assert_eq!(result.schema(), out.arrow_schema());
        assert_eq!(result.num_rows(), 4);
        assert_eq!(result.column(1).null_count(), 4);
    }

    #[test]
    fn lossless_casts_are_made() {
        let out = schema(&[
            ("n", "int32"),
            ("f", "int64"),
            ("ts", "timestamp_ms"),
            ("s", "utf8"),
        ]);
        let dictionary: DictionaryArray<Int8Type> = vec!["a", "b"].into_iter().collect();
        let input = batch(vec![
            ("n", Arc::new(Int64Array::from(vec![1, -2]))),
            ("f", Arc::new(Float64Array::from(vec![2.0, 3.0]))),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![1_000, 2_000])),
            ),
            ("s", Arc::new(dictionary)),
        ]);
        let result = conform_batches(&out, &[input]).unwrap();
        assert_eq!(
            result.column(0).as_primitive::<Int32Type>().values(),
            &[1, -2]
        );
        let ts = result.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.values(), &[1, 2]);
        let inexact = batch(vec![(
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![1_500])),
        )]);
        let error = conform_batches(&out, &[inexact]).unwrap_err();
        assert_eq!(error.column.as_deref(), Some("ts"));
        assert_eq!(result.column(3).as_string::<i32>().value(1), "b");
    }

    #[test]
    fn lossy_or_impossible_casts_name_the_column() {
        let out = schema(&[("n", "int64")]);
        for array in [
            Arc::new(Float64Array::from(vec![1.0, 2.5])) as ArrayRef,
            Arc::new(StringArray::from(vec!["01"])),
        ] {
            let error = conform_batches(&out, &[batch(vec![("n", array)])]).unwrap_err();
            assert_eq!(error.column.as_deref(), Some("n"), "{error}");
            assert!(error.to_string().contains("without loss"), "{error}");
        }
        let narrow = schema(&[("n", "int32")]);
        let big = batch(vec![("n", Arc::new(Int64Array::from(vec![1, i64::MAX])))]);
        assert!(conform_batches(&narrow, &[big]).is_err());
    }

    #[test]
    fn nulls_in_not_null_columns_name_the_row() {
        let out = schema(&[("n", "int64 not null")]);
        let first = batch(vec![("n", Arc::new(Int64Array::from(vec![Some(1)])))]);
        let second = batch(vec![("n", Arc::new(Int64Array::from(vec![Some(2), None])))]);
        let error = conform_batches(&out, &[first, second]).unwrap_err();
        assert_eq!((error.row, error.column.as_deref()), (2, Some("n")));
        let missing = batch(vec![("other", Arc::new(Int64Array::from(vec![1])))]);
        assert!(conform_batches(&out, &[missing]).is_err());
    }
}
