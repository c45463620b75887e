use arrow_array::types::Int64Type;
use arrow_array::{
    BooleanArray, Date32Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray,
};
use arrow_schema::Field;
use object_store::path::Path;

use super::*;

/// Whether `segment` could move a path out of the directory it is placed in.
fn assert_segment_stays_put(segment: &str) {
    assert!(!segment.is_empty());
    assert!(!segment.contains('/'), "{segment:?}");
    assert!(!segment.contains('\\'), "{segment:?}");
    assert!(segment != "." && segment != "..", "{segment:?}");
    assert!(!segment.chars().any(|c| c.is_control()), "{segment:?}");
    // object_store accepts the segment verbatim, with no re-encoding.
    let path = Path::parse(format!("out/{segment}/file.parquet")).unwrap();
    assert_eq!(path.parts().count(), 3);
    assert_eq!(path.parts().nth(1).unwrap().as_ref(), segment);
}

#[test]
fn hostile_values_cannot_leave_the_prefix() {
    let hostile = [
        "../x",
        "/",
        "a/../../b",
        "=",
        "\n",
        "\0",
        "..",
        ".",
        "a\\b",
        "%2F",
        "x\r\ny",
        "\u{7f}",
        "C:\\",
        "?#*",
        "{[]}^",
        "'\"",
        "a=b/c=d",
    ];
    for value in hostile {
        let escaped = escape_partition_value(value);
        let segment = format!("col={escaped}");
        assert_segment_stays_put(&segment);
        assert!(!escaped.contains('='), "{escaped}");
        assert_eq!(unescape_partition_value(&escaped).as_deref(), Some(value));
    }
}

#[test]
fn escaping_matches_hive() {
    assert_eq!(escape_partition_value("../x"), "..%2Fx");
    assert_eq!(escape_partition_value("a/../../b"), "a%2F..%2F..%2Fb");
    assert_eq!(escape_partition_value("="), "%3D");
    assert_eq!(escape_partition_value("\n"), "%0A");
    assert_eq!(escape_partition_value("\0"), "%00");
    assert_eq!(escape_partition_value("100%"), "100%25");
    assert_eq!(escape_partition_value("12:30"), "12%3A30");
    assert_eq!(escape_partition_value("US"), "US");
    assert_eq!(escape_partition_value("a b-c_d.e"), "a b-c_d.e");
}

#[test]
fn empty_values_go_to_the_default_partition() {
    assert_eq!(escape_partition_value(""), HIVE_DEFAULT_PARTITION);
}

#[test]
fn unicode_is_kept() {
    assert_eq!(escape_partition_value("Zürich 東京 🚀"), "Zürich 東京 🚀");
    assert_segment_stays_put(&format!("city={}", escape_partition_value("Zürich 東京")));
}

#[test]
fn percent_round_trips() {
    let escaped = escape_partition_value("50%/off");
    assert_eq!(escaped, "50%25%2Foff");
    assert_eq!(
        unescape_partition_value(&escaped).as_deref(),
        Some("50%/off")
    );
    assert_eq!(unescape_partition_value("bad%2"), None);
    assert_eq!(unescape_partition_value("bad%zz"), None);
}

#[test]
fn values_are_formatted_per_type() {
    let date = Date32Array::from(vec![Some(19_782), None]);
    assert_eq!(
        format_partition_value(&date, 0).as_deref(),
        Some("2024-02-29")
    );
    assert_eq!(format_partition_value(&date, 1), None);

    let ms = TimestampMillisecondArray::from(vec![1_704_067_200_123]).with_timezone("UTC");
    assert_eq!(
        format_partition_value(&ms, 0).as_deref(),
        Some("2024-01-01T00:00:00.123Z")
    );
    let us = TimestampMicrosecondArray::from(vec![1_704_067_200_000_001]).with_timezone("UTC");
    assert_eq!(
        format_partition_value(&us, 0).as_deref(),
        Some("2024-01-01T00:00:00.000001Z")
    );

    let ints = Int64Array::from(vec![-42]);
    assert_eq!(format_partition_value(&ints, 0).as_deref(), Some("-42"));
    let small = Int32Array::from(vec![7]);
    assert_eq!(format_partition_value(&small, 0).as_deref(), Some("7"));
    let bools = BooleanArray::from(vec![Some(true), Some(false)]);
    assert_eq!(format_partition_value(&bools, 0).as_deref(), Some("true"));
    assert_eq!(format_partition_value(&bools, 1).as_deref(), Some("false"));
    let strings = StringArray::from(vec![Some("a/b"), Some(""), None]);
    assert_eq!(format_partition_value(&strings, 0).as_deref(), Some("a/b"));
    assert_eq!(format_partition_value(&strings, 1).as_deref(), Some(""));
    assert_eq!(format_partition_value(&strings, 2), None);
}

fn sample() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("event_date", DataType::Date32, true),
        Field::new("country", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4, 5])),
            Arc::new(Date32Array::from(vec![
                Some(19_723),
                Some(19_724),
                Some(19_723),
                None,
                Some(19_723),
                Some(19_723),
            ])),
            Arc::new(StringArray::from(vec![
                Some("US"),
                Some("US"),
                Some("../etc"),
                Some("US"),
                Some("US"),
                Some(""),
            ])),
        ],
    )
    .unwrap()
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

#[test]
fn split_groups_rows_in_order_without_partition_columns() {
    let partition_by = vec!["event_date".to_string(), "country".to_string()];
    let groups = split_by_partition(&sample(), &partition_by).unwrap();
    let summary: Vec<(&str, Vec<i64>)> = groups.iter().map(|(p, b)| (p.as_str(), ids(b))).collect();
    assert_eq!(
        summary,
        vec![
            ("event_date=2024-01-01/country=US", vec![0, 4]),
            ("event_date=2024-01-02/country=US", vec![1]),
            ("event_date=2024-01-01/country=..%2Fetc", vec![2]),
            ("event_date=__HIVE_DEFAULT_PARTITION__/country=US", vec![3]),
            (
                "event_date=2024-01-01/country=__HIVE_DEFAULT_PARTITION__",
                vec![5]
            ),
        ]
    );
    let expected_schema = file_schema(&sample().schema(), &partition_by);
    assert_eq!(expected_schema.fields().len(), 1);
    for (path, batch) in &groups {
        assert_eq!(batch.schema(), expected_schema, "{path}");
        for segment in path.split('/') {
            assert_segment_stays_put(segment);
        }
    }
}

#[test]
fn one_group_and_no_partitioning() {
    let batch = sample();
    let groups = split_by_partition(&batch, &[]).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].0, "");
    assert_eq!(groups[0].1, batch);

    let single = batch.slice(0, 1);
    let groups = split_by_partition(&single, &["country".to_string()]).unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].0, "country=US");
    assert_eq!(groups[0].1.num_columns(), 2);
    assert_eq!(ids(&groups[0].1), vec![0]);
}

#[test]
fn empty_batch_gives_no_groups() {
    let batch = sample().slice(0, 0);
    assert!(
        split_by_partition(&batch, &["country".to_string()])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_partition_columns_are_errors() {
    let error = split_by_partition(&sample(), &["nope".to_string()]).unwrap_err();
    assert!(matches!(error, PartitionError::UnknownColumn { ref column } if column == "nope"));
    let twice = vec!["country".to_string(), "country".to_string()];
    let error = split_by_partition(&sample(), &twice).unwrap_err();
    assert!(matches!(error, PartitionError::DuplicateColumn { .. }));
}

#[test]
fn file_schema_drops_partition_columns_only() {
    let schema = sample().schema();
    let files = file_schema(&schema, &["country".to_string()]);
    let names: Vec<&str> = files.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["id", "event_date"]);
}

#[test]
fn long_values_get_short_deterministic_folder_names() {
    let long_ascii = "a".repeat(300);
    let long_escaped = "/".repeat(100); // 300 bytes once escaped
    let long_unicode = "é".repeat(200); // 400 bytes, 2 per character
    let near_twin = format!("{}b", "a".repeat(299));
    let values = [
        long_ascii.as_str(),
        long_escaped.as_str(),
        long_unicode.as_str(),
        near_twin.as_str(),
        long_ascii.as_str(),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("tag", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4])),
            Arc::new(StringArray::from(values.to_vec())),
        ],
    )
    .unwrap();
    let groups = split_by_partition(&batch, &["tag".to_string()]).unwrap();
    let summary: Vec<(&str, Vec<i64>)> = groups.iter().map(|(p, b)| (p.as_str(), ids(b))).collect();
    assert_eq!(
        summary.len(),
        4,
        "equal values share a folder, others do not"
    );
    assert_eq!(summary[0].1, vec![0, 4]);
    for (path, _) in &groups {
        // Every file system accepts names of up to 255 bytes.
        assert!(path.len() <= 255, "{} bytes: {path}", path.len());
        assert_segment_stays_put(path);
        let value = path.strip_prefix("tag=").unwrap();
        assert!(value.len() <= MAX_FOLDER_VALUE_BYTES, "{value}");
    }
    // The cut keeps whole characters and whole escapes, and the hash is stable.
    assert_eq!(
        partition_folder_value(&long_escaped),
        format!(
            "{}~{:032x}",
            "%2F".repeat(21),
            fnv1a_128(long_escaped.as_bytes())
        )
    );
    assert!(partition_folder_value(&long_unicode).starts_with(&"é".repeat(32)));
    assert_eq!(
        partition_folder_value(&long_ascii),
        partition_folder_value(&"a".repeat(300))
    );
    // Known-answer check, so the folder of a value never changes between versions.
    assert_eq!(fnv1a_128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
    // Short values are only escaped.
    assert_eq!(partition_folder_value("US"), "US");
    assert_eq!(partition_folder_value(&"x".repeat(128)), "x".repeat(128));
}
