use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType, TimestampMillisecondType};
use arrow_array::{Array, BinaryArray, Int64Array};
use arrow_schema::{DataType, TimeUnit};
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{LogicalType, TimeUnit as ParquetTimeUnit, Type as PhysicalType};

use super::*;
use crate::output::decode::decode_rows;
use crate::output::schema::OutputSchema;
use crate::output::store::open_store;

fn output_spec(
    url: &str,
    decls: &[(&str, &str)],
    partition_by: &[&str],
    compression: Compression,
) -> OutputSpec {
    let decls: Vec<(String, String)> = decls
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    OutputSpec {
        url: url.into(),
        partition_by: partition_by.iter().map(|p| p.to_string()).collect(),
        schema: OutputSchema::from_declarations(&decls).unwrap(),
        compression,
        max_file_size: 128 * 1024 * 1024,
        max_file_age: Duration::from_secs(60),
        options: BTreeMap::new(),
    }
}

const EVENTS: &[(&str, &str)] = &[
    ("user_id", "int64 not null"),
    ("url", "utf8"),
    ("ts", "timestamp_ms"),
    ("seen_us", "timestamp_us"),
    ("event_date", "date32"),
];

/// The split rows of most tests derive from: not a Kafka partition, so files keep
/// stem-and-sequence names.
fn split() -> SplitId {
    SplitId::Sample
}

fn events_spec(url: &str) -> OutputSpec {
    output_spec(url, EVENTS, &["event_date"], Compression::Zstd)
}

/// `count` rows starting at `first`, spread over two dates.
fn events(spec: &OutputSpec, first: i64, count: i64) -> RecordBatch {
    let mut text = String::new();
    for id in first..first + count {
        let date = if id % 2 == 0 {
            "2024-01-01"
        } else {
            "2024-01-02"
        };
        text.push_str(&format!(
            "{{\"user_id\":{id},\"url\":\"/p/{id}\",\"ts\":{ms},\"seen_us\":{us},\"event_date\":\"{date}\"}}\n",
            ms = 1_704_067_200_000 + id,
            us = 1_704_067_200_000_000 + id,
        ));
    }
    decode_rows(&spec.schema, text.as_bytes(), count as usize).unwrap()
}

async fn read_object(store: &dyn ObjectStore, path: &str) -> Bytes {
    let path = Path::parse(path).unwrap();
    store.get(&path).await.unwrap().bytes().await.unwrap()
}

fn read_parquet(data: Bytes) -> (ParquetRecordBatchReaderBuilder<Bytes>, Vec<RecordBatch>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).unwrap();
    let batches = ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (builder, batches)
}

fn user_ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

async fn list_all(store: &dyn ObjectStore) -> BTreeSet<String> {
    store
        .list(None)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn round_trip_into_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_file_path(dir.path().join("out"))
        .unwrap()
        .to_string();
    let spec = events_spec(&url);
    let location = open_store(&url, &spec.options).unwrap();
    let mut sink = ParquetSink::new(location, &spec, "part-run1").unwrap();

    sink.write(&split(), &events(&spec, 0, 6)).unwrap();
    sink.write(&split(), &events(&spec, 6, 4)).unwrap();
    assert_eq!(sink.buffered_rows(), 10);
    assert!(sink.buffered_bytes() > 0);

    let mut files = sink.flush().await.unwrap();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "event_date=2024-01-01/part-run1-000000.parquet",
            "event_date=2024-01-02/part-run1-000001.parquet",
        ]
    );
    assert_eq!(files.iter().map(|f| f.rows).sum::<usize>(), 10);
    assert_eq!(sink.buffered_rows(), 0);
    assert_eq!(sink.buffered_bytes(), 0);

    let on_disk = dir
        .path()
        .join("out/event_date=2024-01-01/part-run1-000000.parquet");
    let data = Bytes::from(std::fs::read(&on_disk).unwrap());
    assert_eq!(data.len() as u64, files[0].bytes);
    let (builder, batches) = read_parquet(data);
    assert_eq!(user_ids(&batches), vec![0, 2, 4, 6, 8], "order kept");

    // The partition column lives in the path only.
    let schema = builder.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["user_id", "url", "ts", "seen_us"]);
    assert!(!schema.field(0).is_nullable());
    assert_eq!(
        schema.field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(
        schema.field(3).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let ts = batches[0]
        .column(2)
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(1), 1_704_067_200_002);
    let seen = batches[0]
        .column(3)
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(seen.value(1), 1_704_067_200_000_002);

    // Parquet-level types: INT64 timestamps in the declared unit, adjusted to UTC.
    let parquet_schema = builder.metadata().file_metadata().schema_descr();
    for (column, unit) in [(2, ParquetTimeUnit::MILLIS), (3, ParquetTimeUnit::MICROS)] {
        let descr = parquet_schema.column(column);
        assert_eq!(descr.physical_type(), PhysicalType::INT64);
        assert_eq!(
            descr.logical_type_ref(),
            Some(&LogicalType::timestamp(true, unit))
        );
    }
    let row_group = builder.metadata().row_group(0);
    for column in row_group.columns() {
        assert!(
            matches!(column.compression(), ParquetCompression::ZSTD(_)),
            "{:?}",
            column.compression()
        );
    }
}

#[tokio::test]
async fn round_trip_in_memory_with_a_prefix_and_other_codecs() {
    for (compression, matches_codec) in [
        (
            Compression::Snappy,
            (|c| matches!(c, ParquetCompression::SNAPPY)) as fn(ParquetCompression) -> bool,
        ),
        (Compression::None, |c| {
            matches!(c, ParquetCompression::UNCOMPRESSED)
        }),
    ] {
        let spec = output_spec("memory://lake/clicks", EVENTS, &[], compression);
        let location = open_store(&spec.url, &spec.options).unwrap();
        let store = location.store.clone();
        let mut sink = ParquetSink::new(location, &spec, "part-x").unwrap();
        sink.write(&split(), &events(&spec, 0, 5)).unwrap();
        let files = sink.flush().await.unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "lake/clicks/part-x-000000.parquet");
        assert_eq!(files[0].rows, 5);

        let (builder, batches) = read_parquet(read_object(&*store, &files[0].path).await);
        assert_eq!(user_ids(&batches), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            builder.schema().fields().len(),
            5,
            "no partition columns dropped"
        );
        let codec = builder.metadata().row_group(0).column(0).compression();
        assert!(matches_codec(codec), "{codec:?}");
    }
}

#[tokio::test]
async fn hostile_partition_values_stay_under_the_prefix() {
    let spec = output_spec(
        "memory://out",
        &[("id", "int64"), ("k", "utf8")],
        &["k"],
        Compression::Zstd,
    );
    let location = open_store(&spec.url, &spec.options).unwrap();
    let store = location.store.clone();
    let mut sink = ParquetSink::new(location, &spec, "f").unwrap();
    let text = "{\"id\":1,\"k\":\"../../etc\"}\n{\"id\":2,\"k\":\"/\"}\n{\"id\":3,\"k\":\"50%\"}\n{\"id\":4}\n";
    sink.write(
        &split(),
        &decode_rows(&spec.schema, text.as_bytes(), 4).unwrap(),
    )
    .unwrap();
    let files = sink.flush().await.unwrap();
    let listed = list_all(&*store).await;
    // Files are numbered as they close, in Hive-path order.
    let expected: BTreeSet<String> = [
        "out/k=%2F/f-000000.parquet",
        "out/k=..%2F..%2Fetc/f-000001.parquet",
        "out/k=50%25/f-000002.parquet",
        "out/k=__HIVE_DEFAULT_PARTITION__/f-000003.parquet",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listed, expected);
    assert_eq!(files.len(), 4);
}

#[tokio::test]
async fn kafka_splits_get_files_of_their_own_named_from_their_range() {
    let spec = events_spec("memory://lake");
    let location = open_store(&spec.url, &spec.options).unwrap();
    let store = location.store.clone();
    let mut sink = ParquetSink::new(location, &spec, "part-run").unwrap();
    let (p0, p1) = (SplitId::kafka("clicks", 0), SplitId::kafka("clicks", 1));
    sink.write(&p0, &events(&spec, 0, 4)).unwrap();
    sink.write(&p1, &events(&spec, 4, 2)).unwrap();
    sink.write(&split(), &events(&spec, 6, 1)).unwrap();
    let ranges = BTreeMap::from([(
        p0.clone(),
        PositionRange {
            first: 10,
            last: 13,
        },
    )]);
    sink.finish_open_files(&ranges).unwrap();
    let pending = sink.pending_objects();
    assert_eq!(
        pending[&p0],
        vec![
            "lake/event_date=2024-01-01/clicks-0-00000000000000000010-00000000000000000013.parquet",
            "lake/event_date=2024-01-02/clicks-0-00000000000000000010-00000000000000000013.parquet",
        ]
    );
    // Without a range, a Kafka split's files are named like any other.
    assert!(
        pending[&p1].iter().all(|o| o.contains("/part-run-")),
        "{pending:?}"
    );
    assert_eq!(pending[&split()].len(), 1);
    let files = sink.flush().await.unwrap();
    assert_eq!(files.len(), 5, "no file mixes splits");
    let rows: usize = files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 7);
    assert_eq!(list_all(&*store).await.len(), 5);
}

#[tokio::test]
async fn flushing_nothing_writes_nothing() {
    let spec = events_spec("memory://");
    let location = open_store(&spec.url, &spec.options).unwrap();
    let store = location.store.clone();
    let mut sink = ParquetSink::new(location, &spec, "part").unwrap();
    assert!(!sink.flush_due(Instant::now() + Duration::from_secs(3600)));
    assert_eq!(sink.flush_deadline(), None);
    sink.write(&split(), &events(&spec, 0, 0)).unwrap();
    assert_eq!(sink.buffered_rows(), 0);
    assert!(sink.flush().await.unwrap().is_empty());
    assert!(list_all(&*store).await.is_empty());
}

#[tokio::test]
async fn size_makes_a_flush_due_and_names_keep_increasing() {
    let mut spec = events_spec("memory://");
    spec.partition_by.clear();
    spec.max_file_size = 4 * 1024;
    let location = open_store(&spec.url, &spec.options).unwrap();
    let mut sink = ParquetSink::new(location, &spec, "part").unwrap();

    sink.write(&split(), &events(&spec, 0, 10)).unwrap();
    assert!(
        !sink.flush_due(Instant::now()),
        "{} bytes",
        sink.buffered_bytes()
    );
    let mut next = 10;
    while !sink.flush_due(Instant::now()) {
        sink.write(&split(), &events(&spec, next, 100)).unwrap();
        next += 100;
        assert!(
            next < 100_000,
            "never due at {} bytes",
            sink.buffered_bytes()
        );
    }
    assert!(sink.buffered_bytes() >= 4 * 1024);
    let first = sink.flush().await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].rows as i64, next);
    assert!(!sink.flush_due(Instant::now()));

    sink.write(&split(), &events(&spec, next, 1)).unwrap();
    let second = sink.flush().await.unwrap();
    assert_eq!(second[0].path, "part-000001.parquet");
    assert_eq!(first[0].path, "part-000000.parquet");
}

#[tokio::test]
async fn age_makes_a_flush_due() {
    let spec = events_spec("memory://");
    let location = open_store(&spec.url, &spec.options).unwrap();
    let mut sink = ParquetSink::new(location, &spec, "part").unwrap();
    let before = Instant::now();
    sink.write(&split(), &events(&spec, 0, 1)).unwrap();
    let after = Instant::now();
    let deadline = sink.flush_deadline().unwrap();
    assert!(deadline >= before + spec.max_file_age && deadline <= after + spec.max_file_age);
    assert!(!sink.flush_due(after));
    assert!(sink.flush_due(deadline));

    // A later write does not move the deadline: it follows the oldest row.
    sink.write(&split(), &events(&spec, 1, 1)).unwrap();
    assert_eq!(sink.flush_deadline(), Some(deadline));
}

#[tokio::test]
async fn mismatched_batches_are_rejected_without_harm() {
    let spec = events_spec("memory://");
    let location = open_store(&spec.url, &spec.options).unwrap();
    let mut sink = ParquetSink::new(location, &spec, "part").unwrap();
    let other = output_spec("memory://", &[("x", "int64")], &[], Compression::Zstd);
    let wrong = decode_rows(&other.schema, b"{\"x\":1}\n", 1).unwrap();
    let error = sink.write(&split(), &wrong).unwrap_err();
    assert!(
        matches!(error, WriteError::SchemaMismatch { .. }),
        "{error}"
    );
    assert!(!error.is_transient());
    sink.write(&split(), &events(&spec, 0, 2)).unwrap();
    assert_eq!(sink.flush().await.unwrap().len(), 2);
}

#[path = "writer/failures.rs"]
mod failures;
