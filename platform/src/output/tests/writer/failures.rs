//! Writer behaviour when uploads fail, and hostile input (continued from `tests/writer.rs`).

use sluice_connectors::faulty_store::{Fault, Faults, FaultyStore, Request};

use super::*;

#[test]
fn bad_configurations_are_rejected() {
    let spec = events_spec("memory://");
    let location = || open_store("memory://", &BTreeMap::new()).unwrap();
    for stem in ["", "a/b", "x\ny"] {
        let error = ParquetSink::new(location(), &spec, stem).unwrap_err();
        assert!(
            matches!(error, WriteError::InvalidFileStem { .. }),
            "{stem:?}: {error}"
        );
    }
    let all = output_spec("memory://", &[("d", "date32")], &["d"], Compression::Zstd);
    let error = ParquetSink::new(location(), &all, "p").unwrap_err();
    assert!(matches!(error, WriteError::NoDataColumns { .. }), "{error}");
    let mut unknown = events_spec("memory://");
    unknown.partition_by = vec!["nope".into()];
    let error = ParquetSink::new(location(), &unknown, "p").unwrap_err();
    assert!(error.to_string().contains("nope"), "{error}");
}

#[test]
fn flush_is_a_send_future() {
    fn assert_send<T: Send>(_: &T) {}
    let spec = events_spec("memory://");
    let mut sink = ParquetSink::new(
        open_store("memory://", &BTreeMap::new()).unwrap(),
        &spec,
        "p",
    )
    .unwrap();
    let flush = sink.flush();
    assert_send(&flush);
}

/// Fails the first `failures` whole-object or multipart uploads, and records every
/// upload attempt.
#[derive(Debug)]
struct FlakyUploads {
    failures: AtomicUsize,
    attempts: Mutex<Vec<(Path, &'static str)>>,
}

impl Faults for FlakyUploads {
    fn before(&self, request: Request, location: &Path) -> Fault {
        let kind = match request {
            Request::Put => "put",
            Request::Multipart => "multipart",
            Request::Delete | Request::Get => return Fault::Pass,
        };
        self.attempts.lock().unwrap().push((location.clone(), kind));
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failed {
            Fault::Fail("upload")
        } else {
            Fault::Pass
        }
    }
}

type FlakyStore = FaultyStore<FlakyUploads>;

/// An in-memory store whose first `failures` uploads fail.
fn flaky_store(failures: usize) -> Arc<FlakyStore> {
    Arc::new(FaultyStore::new(
        Arc::new(InMemory::new()),
        FlakyUploads {
            failures: AtomicUsize::new(failures),
            attempts: Mutex::new(Vec::new()),
        },
    ))
}

fn attempted(store: &FlakyStore) -> Vec<(Path, &'static str)> {
    store.faults().attempts.lock().unwrap().clone()
}

fn flaky_location(store: &Arc<FlakyStore>) -> OutputLocation {
    OutputLocation {
        store: store.clone(),
        prefix: Path::from("out"),
        url: "memory://out".into(),
    }
}

#[tokio::test]
async fn failed_uploads_are_retried_under_the_same_names() {
    let spec = events_spec("memory://out");
    let store = flaky_store(1);
    let mut sink = ParquetSink::new(flaky_location(&store), &spec, "part").unwrap();
    sink.write(&split(), &events(&spec, 0, 10)).unwrap();

    let error = sink.flush().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        matches!(
            error,
            WriteError::Upload {
                failed: 1,
                total: 2,
                ..
            }
        ),
        "{error}"
    );
    let after_failure = list_all(&*store).await;
    assert_eq!(after_failure.len(), 1, "the other file was uploaded");
    assert_eq!(
        sink.buffered_rows(),
        5,
        "the failed file's rows stay buffered"
    );
    assert!(sink.buffered_bytes() > 0);
    let failed_path = attempted(&store)[0].0.clone();
    assert!(!after_failure.contains(failed_path.as_ref()));

    // Rows written in between go to new files; the pending one keeps its name.
    sink.write(&split(), &events(&spec, 10, 2)).unwrap();
    let files = sink.flush().await.unwrap();
    assert_eq!(sink.buffered_rows(), 0);

    let reported: BTreeSet<String> = files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(reported.len(), files.len(), "no file reported twice");
    assert_eq!(files.iter().map(|f| f.rows).sum::<usize>(), 12);
    let stored = list_all(&*store).await;
    assert_eq!(stored, reported, "every completed file reported, once");
    assert_eq!(
        stored,
        [
            "out/event_date=2024-01-01/part-000000.parquet",
            "out/event_date=2024-01-02/part-000001.parquet",
            "out/event_date=2024-01-01/part-000002.parquet",
            "out/event_date=2024-01-02/part-000003.parquet",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let attempts = attempted(&store);
    let retried: Vec<&Path> = attempts
        .iter()
        .map(|(p, _)| p)
        .filter(|p| **p == failed_path)
        .collect();
    assert_eq!(
        retried.len(),
        2,
        "the failed file was tried again, same name"
    );

    // Every row is stored exactly once.
    let mut ids = Vec::new();
    for path in &stored {
        let (_, batches) = read_parquet(read_object(&*store, path).await);
        ids.extend(user_ids(&batches));
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_flush_that_keeps_failing_keeps_everything_pending() {
    let spec = events_spec("memory://out");
    let store = flaky_store(4);
    let mut sink = ParquetSink::new(flaky_location(&store), &spec, "part").unwrap();
    sink.write(&split(), &events(&spec, 0, 4)).unwrap();
    assert!(sink.flush().await.is_err());
    assert!(sink.flush().await.is_err());
    assert!(list_all(&*store).await.is_empty());
    assert_eq!(sink.buffered_rows(), 4);
    let files = sink.flush().await.unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(list_all(&*store).await.len(), 2);
}

/// Incompressible bytes, deterministic.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn large_files_use_a_multipart_upload_that_is_retried() {
    let spec = output_spec(
        "memory://out",
        &[("id", "int64"), ("blob", "binary")],
        &[],
        Compression::None,
    );
    let store = flaky_store(1);
    let mut sink = ParquetSink::new(flaky_location(&store), &spec, "big").unwrap();
    let rows = 18;
    let blobs: Vec<Vec<u8>> = (0..rows)
        .map(|i| noise(1024 * 1024, i as u64 + 1))
        .collect();
    let batch = RecordBatch::try_new(
        spec.schema.arrow_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(BinaryArray::from_iter_values(blobs.iter())),
        ],
    )
    .unwrap();
    sink.write(&split(), &batch).unwrap();
    assert!(sink.buffered_bytes() > MULTIPART_THRESHOLD);

    assert!(sink.flush().await.is_err());
    let files = sink.flush().await.unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].bytes > MULTIPART_THRESHOLD as u64);
    let attempts = attempted(&store);
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|(p, kind)| *kind == "multipart" && p.as_ref() == files[0].path)
    );

    let (_, batches) = read_parquet(read_object(&*store, &files[0].path).await);
    let read: Vec<Vec<u8>> = batches
        .iter()
        .flat_map(|b| {
            let column = b.column(1).as_binary::<i32>();
            (0..column.len())
                .map(|i| column.value(i).to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(read, blobs);
}
