//! `sluice head` prints valid JSON for every value a Parquet file can hold, including the
//! ones Sluice itself no longer writes (timestamps and dates far outside years 1–9999,
//! NaN and infinities) but older files or other writers may contain.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Date32Array, Float32Array, Float64Array, RecordBatch, TimestampMicrosecondArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::sluice_binary;
use parquet::arrow::ArrowWriter;

#[test]
fn head_prints_valid_json_for_extreme_values() {
    let utc = Some(Arc::from("UTC"));
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ms",
            DataType::Timestamp(TimeUnit::Millisecond, utc.clone()),
            true,
        ),
        Field::new(
            "us",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            true,
        ),
        Field::new("d", DataType::Date32, true),
        Field::new("f64", DataType::Float64, true),
        Field::new("f32", DataType::Float32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from(vec![i64::MAX, i64::MIN, 0, -62_135_596_800_001])
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(vec![i64::MAX, i64::MIN, 1, 253_402_300_800_000_000])
                .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from(vec![
            i32::MAX,
            i32::MIN,
            19_782,
            -719_163,
        ])),
        Arc::new(Float64Array::from(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.5,
        ])),
        Arc::new(Float32Array::from(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
        ])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extreme.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let out = Command::new(sluice_binary())
        .arg("head")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for line in &lines {
        let row: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(row.is_object(), "{line}");
    }
    let row: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        row["ms"], "9223372036854775807 ms since 1970-01-01 (outside the calendar)",
        "{}",
        lines[0]
    );
    // Values in range print as before.
    let row: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(row["ms"], "1970-01-01T00:00:00+00:00", "{}", lines[2]);
    assert_eq!(row["d"], "2024-02-29", "{}", lines[2]);
}
