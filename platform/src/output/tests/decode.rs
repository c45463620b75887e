use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType,
};

use super::*;

fn schema(decls: &[(&str, &str)]) -> OutputSchema {
    let decls: Vec<(String, String)> = decls
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    OutputSchema::from_declarations(&decls).unwrap()
}

fn decode(schema: &OutputSchema, text: &str) -> Result<RecordBatch, DecodeError> {
    let rows = text.lines().filter(|l| !l.trim().is_empty()).count();
    decode_rows(schema, text.as_bytes(), rows)
}

fn all_types() -> OutputSchema {
    schema(&[
        ("b", "bool"),
        ("i32", "int32"),
        ("i64", "int64"),
        ("f32", "float32"),
        ("f64", "float64"),
        ("s", "utf8"),
        ("bin", "binary"),
        ("d", "date32"),
        ("ms", "timestamp_ms"),
        ("us", "timestamp_us"),
    ])
}

#[test]
fn decodes_every_type_with_nulls_and_missing_fields() {
    let text = concat!(
        r#"{"b":true,"i32":-7,"i64":9007199254740993,"f32":1.5,"f64":-2.25,"s":"héllo","bin":"AAEC/w==","d":"2024-02-29","ms":"2024-01-01T00:00:01.5Z","us":"2024-01-01T01:00:00.000001+01:00","extra":{"x":1}}"#,
        "\n",
        r#"{"b":null,"i32":null,"i64":null,"f32":null,"f64":null,"s":null,"bin":null,"d":null,"ms":null,"us":null}"#,
        "\n",
        "{}\n",
        r#"{"b":false,"i32":12,"i64":-9223372036854775808,"f32":"NaN","f64":"-Infinity","s":"","bin":"AAEC_w","d":19782,"ms":1704067200123,"us":1704067200123456}"#,
        "\n",
    );
    let batch = decode(&all_types(), text).unwrap();
    assert_eq!(batch.num_rows(), 4);
    assert_eq!(batch.schema(), all_types().arrow_schema());

    let b = batch.column(0).as_boolean();
    assert!(b.value(0));
    assert!(!b.value(3));
    let i32s = batch.column(1).as_primitive::<Int32Type>();
    assert_eq!(i32s.value(0), -7);
    assert_eq!(i32s.value(3), 12);
    let i64s = batch.column(2).as_primitive::<Int64Type>();
    assert_eq!(
        i64s.value(0),
        9_007_199_254_740_993,
        "no precision lost through f64"
    );
    assert_eq!(i64s.value(3), i64::MIN);
    let f32s = batch.column(3).as_primitive::<Float32Type>();
    assert_eq!(f32s.value(0), 1.5);
    assert!(f32s.value(3).is_nan());
    let f64s = batch.column(4).as_primitive::<Float64Type>();
    assert_eq!(f64s.value(0), -2.25);
    assert_eq!(f64s.value(3), f64::NEG_INFINITY);
    let s = batch.column(5).as_string::<i32>();
    assert_eq!(s.value(0), "héllo");
    assert_eq!(s.value(3), "");
    let bin = batch.column(6).as_binary::<i32>();
    assert_eq!(bin.value(0), &[0, 1, 2, 255]);
    assert_eq!(bin.value(3), &[0, 1, 2, 255], "url-safe, unpadded");
    let d = batch.column(7).as_primitive::<Date32Type>();
    assert_eq!(d.value(0), 19_782); // 2024-02-29
    assert_eq!(d.value(3), 19_782);
    let ms = batch.column(8).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ms.value(0), 1_704_067_201_500);
    assert_eq!(ms.value(3), 1_704_067_200_123);
    let us = batch.column(9).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(us.value(0), 1_704_067_200_000_001, "offset applied");
    assert_eq!(us.value(3), 1_704_067_200_123_456);

    for column in batch.columns() {
        assert!(column.is_valid(0));
        assert!(column.is_null(1), "explicit null");
        assert!(column.is_null(2), "missing field");
        assert!(column.is_valid(3));
    }
}

#[test]
fn fields_in_any_order_repeated_or_undeclared_find_their_columns() {
    let schema = schema(&[("a", "int64"), ("s", "utf8"), ("b", "bool")]);
    let text = concat!(
        r#"{"a":1,"s":"x","b":true}"#,
        "\n",
        r#"{"s":"y","a":2}"#,
        "\n",
        r#"{"zz":{"a":0},"b":false,"a":3,"s":"z"}"#,
        "\n",
        r#"{"a":4,"a":5,"s":"w"}"#,
        "\n",
        r#"{"s":"v","b":true,"a":6}"#,
        "\n",
        r#"{"s":"u","b":null,"a":7}"#,
        "\n",
    );
    let batch = decode(&schema, text).unwrap();
    let a = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(
        a.values().to_vec(),
        [1, 2, 3, 5, 6, 7],
        "a repeated field counts its last value"
    );
    let s = batch.column(1).as_string::<i32>();
    assert_eq!(
        s.iter().flatten().collect::<Vec<_>>(),
        ["x", "y", "z", "w", "v", "u"]
    );
    let b = batch.column(2).as_boolean();
    assert_eq!(
        b.iter().collect::<Vec<_>>(),
        [Some(true), None, Some(false), None, Some(true), None]
    );
}

#[test]
fn timestamps_are_utc_in_the_declared_unit() {
    let batch = decode(
        &all_types(),
        r#"{"ms":"2024-01-01 00:00:00","us":"1970-01-01T00:00:00.000002Z"}"#,
    )
    .unwrap();
    assert_eq!(
        batch.schema().field(8).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(
        batch.schema().field(9).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let ms = batch.column(8).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ms.value(0), 1_704_067_200_000, "no offset means UTC");
    let us = batch.column(9).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(us.value(0), 2);
}

#[test]
fn integral_floats_are_integers_but_fractions_are_not() {
    let s = schema(&[("n", "int64")]);
    let batch = decode(&s, "{\"n\":3.0}\n{\"n\":2e3}\n").unwrap();
    let n = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(n.values(), &[3, 2000]);

    let error = decode(&s, "{\"n\":1}\n{\"n\":1.5}\n").unwrap_err();
    assert_eq!(error.row, 1);
    assert_eq!(error.column.as_deref(), Some("n"));
    assert_eq!(
        error.message,
        "expected an integer that fits in 64 bits, got 1.5"
    );
}

#[test]
fn out_of_range_numbers_are_errors() {
    let s = schema(&[("n", "int32"), ("f", "float32")]);
    let error = decode(&s, r#"{"n":2147483648}"#).unwrap_err();
    assert_eq!(error.column.as_deref(), Some("n"));
    let error = decode(&s, r#"{"f":1e40}"#).unwrap_err();
    assert_eq!(error.column.as_deref(), Some("f"));
}

#[test]
fn wrong_types_name_the_row_and_the_column() {
    let s = all_types();
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"s":5}"#, "s", "expected a string, got 5"),
        (r#"{"s":true}"#, "s", "expected a string, got true"),
        (r#"{"b":"true"}"#, "b", "expected a boolean, got \"true\""),
        (r#"{"b":1}"#, "b", "expected a boolean, got 1"),
        (
            r#"{"i64":"abc"}"#,
            "i64",
            "expected an integer that fits in 64 bits, got \"abc\"",
        ),
        (r#"{"f64":"1.5"}"#, "f64", "expected a number, got \"1.5\""),
        (
            r#"{"i32":{"a":1}}"#,
            "i32",
            "expected an integer that fits in 32 bits, got an object",
        ),
        (r#"{"s":[1]}"#, "s", "expected a string, got a list"),
        (
            r#"{"bin":"not base64!"}"#,
            "bin",
            "expected a base64 string, got \"not base64!\"",
        ),
        (r#"{"bin":12}"#, "bin", "expected a base64 string, got 12"),
        (
            r#"{"d":"2024-1-1"}"#,
            "d",
            "expected a date in years 1 to 9999 (\"YYYY-MM-DD\" or days since 1970-01-01), got \"2024-1-1\"",
        ),
        (
            r#"{"d":"2024-02-30"}"#,
            "d",
            "expected a date in years 1 to 9999 (\"YYYY-MM-DD\" or days since 1970-01-01), got \"2024-02-30\"",
        ),
        (
            r#"{"d":"2024-01-01T00:00:00Z"}"#,
            "d",
            "expected a date in years 1 to 9999 (\"YYYY-MM-DD\" or days since 1970-01-01), got \"2024-01-01T00:00:00Z\"",
        ),
        (
            r#"{"ms":"yesterday"}"#,
            "ms",
            "expected a timestamp in years 1 to 9999, got \"yesterday\"",
        ),
        (
            r#"{"us":1.5}"#,
            "us",
            "expected a timestamp in years 1 to 9999, got 1.5",
        ),
        (
            r#"{"ms":false}"#,
            "ms",
            "expected a timestamp in years 1 to 9999, got false",
        ),
    ];
    for (bad, column, message) in cases {
        let text = format!("{{}}\n{{}}\n{bad}\n{{}}\n");
        let error = decode(&s, &text).unwrap_err();
        assert_eq!(error.row, 2, "{bad}");
        assert_eq!(error.column.as_deref(), Some(*column), "{bad}");
        assert_eq!(&error.message, message, "{bad}");
    }
}

#[test]
fn error_display_names_row_and_column() {
    let s = schema(&[("id", "int64"), ("ts", "timestamp_ms")]);
    let mut text = String::new();
    for i in 0..17 {
        text.push_str(&format!("{{\"id\":{i},\"ts\":{i}}}\n"));
    }
    text.push_str("{\"id\":17,\"ts\":\"yesterday\"}\n");
    let error = decode(&s, &text).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"output row 17, column "ts": expected a timestamp in years 1 to 9999, got "yesterday""#
    );
}

#[test]
fn the_earliest_failing_row_is_reported_across_columns() {
    // The fast path decodes column by column, so it trips over "a" at row 3 first; the
    // earlier failure in "b" at row 1 is what must be reported.
    let s = schema(&[("a", "int64"), ("b", "int64")]);
    let text =
        "{\"a\":1,\"b\":1}\n{\"a\":1,\"b\":\"x\"}\n{\"a\":1,\"b\":1}\n{\"a\":\"y\",\"b\":1}\n";
    let error = decode(&s, text).unwrap_err();
    assert_eq!(error.row, 1);
    assert_eq!(error.column.as_deref(), Some("b"));
}

#[test]
fn not_null_columns_reject_null_and_missing_values() {
    let s = schema(&[("id", "int64 not null"), ("name", "utf8")]);
    let ok = decode(&s, "{\"id\":1}\n").unwrap();
    assert!(!ok.schema().field(0).is_nullable());

    let error = decode(&s, "{\"id\":1}\n{\"id\":null}\n").unwrap_err();
    assert_eq!(error.row, 1);
    assert_eq!(error.column.as_deref(), Some("id"));
    assert_eq!(error.message, "null, but the column is declared not null");

    let error = decode(&s, "{\"id\":1}\n{\"id\":2}\n{\"name\":\"x\"}\n").unwrap_err();
    assert_eq!(error.row, 2);
    assert_eq!(error.column.as_deref(), Some("id"));
    assert_eq!(
        error.message,
        "missing, but the column is declared not null"
    );
}

#[test]
fn empty_input_gives_an_empty_batch() {
    let s = all_types();
    let batch = decode_rows(&s, b"", 0).unwrap();
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.schema(), s.arrow_schema());
    let batch = decode_rows(&s, b"\n  \n", 0).unwrap();
    assert_eq!(batch.num_rows(), 0);
}

#[test]
fn malformed_lines_are_located() {
    let s = schema(&[("a", "int64")]);
    let error = decode(&s, "{\"a\":1}\n{\"a\":\n{\"a\":3}\n").unwrap_err();
    assert_eq!(error.row, 1);
    assert_eq!(error.column, None);

    let error = decode(&s, "{\"a\":1}\n{\"a\":2}\n5\n").unwrap_err();
    assert_eq!(error.row, 2);
    assert_eq!(error.column, None);
    assert!(error.message.starts_with("not a JSON object"), "{error}");

    let error = decode_rows(&s, b"{\"a\":1}\n{\"a\":2} {\"a\":3}\n", 2).unwrap_err();
    assert_eq!(error.row, 1);
    assert!(
        error
            .message
            .starts_with("more than one JSON value on one line"),
        "{error}"
    );
}

#[test]
fn row_count_mismatch_is_an_error() {
    let s = schema(&[("a", "int64")]);
    let error = decode_rows(&s, b"{\"a\":1}\n{\"a\":2}\n", 3).unwrap_err();
    assert_eq!(error.row, 2);
    assert!(
        error
            .message
            .contains("decoded 2 rows where 3 were expected")
    );
}

#[test]
fn many_rows_decode_in_one_batch() {
    let s = schema(&[("a", "int64"), ("s", "utf8")]);
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("{{\"a\":{i},\"s\":\"v{i}\"}}\n"));
    }
    let batch = decode(&s, &text).unwrap();
    assert_eq!(batch.num_rows(), 5000);
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>().value(4999),
        4999
    );

    // A failure deep in a large input is still found at the right row.
    text.push_str("{\"a\":\"x\"}\n");
    let error = decode(&s, &text).unwrap_err();
    assert_eq!(error.row, 5000);
}

#[test]
fn long_bad_strings_are_shortened_in_messages() {
    let s = schema(&[("a", "int64")]);
    let long = "x".repeat(500);
    let error = decode(&s, &format!("{{\"a\":\"{long}\"}}")).unwrap_err();
    assert!(error.message.len() < 200, "{}", error.message);
    assert!(error.message.ends_with('…'));
}

#[test]
fn rows_are_counted_across_decoder_batches() {
    // More rows than announced makes the decoder emit several batches; a failure in a
    // later batch is still reported at its row in the whole output.
    let s = schema(&[("a", "int64")]);
    let text = "{\"a\":0}\n{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n{\"a\":\"four\"}\n";
    let error = decode_rows(&s, text.as_bytes(), 2).unwrap_err();
    assert_eq!(error.row, 4);
    assert_eq!(error.column.as_deref(), Some("a"));
    assert_eq!(
        error.message,
        "expected an integer that fits in 64 bits, got \"four\""
    );
}

#[test]
fn integers_out_of_range_are_refused_in_both_directions() {
    let s = schema(&[("id", "int64"), ("n", "int64")]);
    let ok = decode(
        &s,
        "{\"n\":9223372036854775807}\n{\"n\":-9223372036854775808}\n{\"n\":-0}\n{\"n\":1.50e2}\n{\"n\":120e-1}\n{\"n\":0.0e99999999}\n",
    )
    .unwrap();
    let n = ok.column(1).as_primitive::<Int64Type>();
    assert_eq!(n.values().to_vec(), vec![i64::MAX, i64::MIN, 0, 150, 12, 0]);
    for bad in [
        "9223372036854775808",
        "-9223372036854775809",
        "-9223372036854775808.5",
        "9.223372036854775808e18",
        "-9.223372036854775809e18",
        "1e19",
        "1e999999999999",
        "99999999999999999999999999999",
    ] {
        let text = format!("{{\"id\":1,\"n\":1}}\n{{\"id\":2,\"n\":{bad}}}\n");
        let error = decode(&s, &text).unwrap_err();
        assert_eq!(error.row, 1, "{bad}: {error}");
        assert_eq!(error.column.as_deref(), Some("n"), "{bad}: {error}");
        assert!(error.message.contains("64 bits"), "{bad}: {error}");
    }
    // Both sides of the 18-digit fast path read the same way.
    let edges = decode(
        &s,
        "{\"n\":999999999999999999}\n{\"n\":-999999999999999999}\n{\"n\":1000000000000000000}\n{\"n\":-1000000000000000000}\n{\"n\":7}\n",
    )
    .unwrap();
    assert_eq!(
        edges
            .column(1)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        vec![
            999_999_999_999_999_999,
            -999_999_999_999_999_999,
            1_000_000_000_000_000_000,
            -1_000_000_000_000_000_000,
            7
        ]
    );
    let s32 = schema(&[("n", "int32")]);
    assert!(decode(&s32, "{\"n\":2147483648}").is_err());
    assert!(decode(&s32, "{\"n\":-2147483649}").is_err());
    assert!(decode(&s32, "{\"n\":-2147483648}").is_ok());
}

#[test]
fn strings_are_not_numbers() {
    for decl in ["int32", "int64"] {
        let s = schema(&[("n", decl)]);
        let error = decode(&s, "{\"n\":9}\n{\"n\":\"9\"}\n").unwrap_err();
        assert_eq!(
            (error.row, error.column.as_deref()),
            (1, Some("n")),
            "{error}"
        );
        assert!(error.message.contains("got \"9\""), "{error}");
    }
}

#[test]
fn dates_and_timestamps_outside_years_1_to_9999_are_refused() {
    let s = schema(&[
        ("d", "date32"),
        ("ms", "timestamp_ms"),
        ("us", "timestamp_us"),
    ]);
    let edges = concat!(
        r#"{"d":"0001-01-01","ms":"0001-01-01T00:00:00Z","us":"9999-12-31T23:59:59.999999Z"}"#,
        "\n",
        r#"{"d":2932896,"ms":253402300799999,"us":-62135596800000000}"#,
        "\n",
    );
    let batch = decode(&s, edges).unwrap();
    assert_eq!(batch.num_rows(), 2);
    for (column, value) in [
        ("d", "\"0000-12-31\""),
        ("d", "-719163"),
        ("d", "2932897"),
        ("ms", "9223372036854775807"),
        ("ms", "-9223372036854775808"),
        ("ms", "253402300800000"),
        ("ms", "-62135596800001"),
        ("us", "253402300800000000"),
        ("us", "\"+10000-01-01T00:00:00Z\""),
    ] {
        let text = format!("{{}}\n{{\"{column}\":{value}}}\n");
        let error = decode(&s, &text).unwrap_err();
        assert_eq!(error.row, 1, "{column}={value}: {error}");
        assert_eq!(
            error.column.as_deref(),
            Some(column),
            "{column}={value}: {error}"
        );
        assert!(error.message.contains("years 1 to 9999"), "{error}");
    }
}
