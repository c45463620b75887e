//! A split that goes quiet is processed after `batch.max_idle`, not after `max_wait`: the
//! end of a backlog or of a burst does not sit in an open batch.

use std::sync::atomic::{AtomicI64, Ordering};

use super::*;

/// Delivers its events once, then has nothing more (a broker whose topic went quiet).
struct QuietSource {
    events: Option<Vec<Event>>,
    /// The last acknowledged offset, -1 before any ack.
    acked: Arc<AtomicI64>,
}

#[async_trait]
impl Source for QuietSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        match self.events.take() {
            Some(events) => Ok(Some(events)),
            // Cancel-safe: nothing was taken.
            None => std::future::pending().await,
        }
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        for (_, range) in delta.iter() {
            self.acked.fetch_max(range.last, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_records_before_a_quiet_spell_are_committed_without_waiting_out_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fn.sh"), "exec cat").unwrap();
    let text = r#"name = "quiet"
[trigger.bucket]
url = "memory://in"
[function]
command = ["sh", "fn.sh"]
[batch]
max_records = 1000
max_wait = "10m"
[output]
url = "out"
schema = { id = "int64 not null", day = "date32" }
max_file_age = "1s"
"#;
    let spec = parse_job(text, &dir.path().join("job.toml"), dir.path(), &|_| None).unwrap();
    assert_eq!(
        spec.batch.max_idle,
        Duration::from_millis(200),
        "the default"
    );
    let events = (0..5)
        .map(|i| {
            Event::from_payload(
                format!(r#"{{"id":{i},"day":"2026-01-01"}}"#),
                splits::origin(0, i),
            )
        })
        .collect();
    let acked = Arc::new(AtomicI64::new(-1));
    let source = QuietSource {
        events: Some(events),
        acked: acked.clone(),
    };
    let job = Job::over(&spec, Box::new(source), JobRuntime::for_job(&spec))
        .await
        .unwrap();
    let stopper = job.stopper();
    let run = job.run(CancellationToken::new());
    let wait = async {
        // `max_wait` is 10 minutes and the batch is far from `max_records`: only the idle
        // cut can run it, then the file age commits it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::SeqCst) < 4 {
            assert!(!stopper.is_finished(), "the job ended");
            assert!(
                Instant::now() < deadline,
                "the 5 records were not acknowledged within 60 s: the open batch waits for max_wait"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stopper.stop().await;
    };
    let (stats, ()) = tokio::join!(run, wait);
    let stats = stats.unwrap();
    assert_eq!((stats.records_in, stats.rows_out), (5, 5));
    assert_eq!(parquet_files(&dir.path().join("out")).len(), 1);
}
