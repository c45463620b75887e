//! A split that goes quiet is processed after `batch.max_idle`, not after `max_wait`: the
//! end of a backlog or of a burst does not sit in an open batch. Output of at least a full
//! batch is then committed at once; less (a trickle) waits for `output.max_file_age`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;

/// Delivers its events once, then has nothing more (a broker whose topic went quiet).
struct QuietSource {
    events: Option<Vec<Event>>,
    /// The last acknowledged offset, -1 before any ack.
    acked: Arc<AtomicI64>,
    /// When the events were delivered and when the first ack came.
    times: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
}

impl QuietSource {
    fn new(events: Vec<Event>) -> Self {
        Self {
            events: Some(events),
            acked: Arc::new(AtomicI64::new(-1)),
            times: Arc::default(),
        }
    }
}

#[async_trait]
impl Source for QuietSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        match self.events.take() {
            Some(events) => {
                self.times.lock().unwrap().0 = Some(Instant::now());
                Ok(Some(events))
            }
            // Cancel-safe: nothing was taken.
            None => std::future::pending().await,
        }
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        self.times
            .lock()
            .unwrap()
            .1
            .get_or_insert_with(Instant::now);
        for (_, range) in delta.iter() {
            self.acked.fetch_max(range.last, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn quiet_job(dir: &Path, max_records: usize, max_file_age: &str) -> JobSpec {
    std::fs::write(dir.join("fn.sh"), "exec cat").unwrap();
    let text = format!(
        r#"name = "quiet"
[trigger.bucket]
url = "memory://in"
[function]
command = ["sh", "fn.sh"]
[batch]
max_records = {max_records}
max_wait = "10m"
[output]
url = "out"
schema = {{ id = "int64 not null", day = "date32" }}
max_file_age = "{max_file_age}"
"#
    );
    parse_job(&text, &dir.join("job.toml"), dir, &|_| None).unwrap()
}

/// Runs `spec` over `count` events of one split until every one is acknowledged (at most
/// 60 s), then stops it. Returns the stats and how long after the delivery the first ack
/// came.
async fn run_until_acknowledged(spec: &JobSpec, count: i64) -> (JobStats, Duration) {
    let source = QuietSource::new(one_split_events(count));
    let (acked, times) = (source.acked.clone(), source.times.clone());
    let (stats, _) = run_until_then_stop(
        spec,
        Box::new(source),
        Duration::from_secs(60),
        || acked.load(Ordering::SeqCst) >= count - 1,
        || {
            format!(
                "acknowledged through {} of {}: the output waits for max_wait or the file age",
                acked.load(Ordering::SeqCst),
                count - 1
            )
        },
    )
    .await;
    let (delivered, first_ack) = *times.lock().unwrap();
    (stats.unwrap(), first_ack.unwrap() - delivered.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_trickle_is_run_after_max_idle_and_committed_at_the_file_age() {
    let dir = tempfile::tempdir().unwrap();
    // `max_wait` is 10 minutes and the batch is far from `max_records`: only the idle
    // cut can run it. Its 5 rows are less than a batch: they wait for the file age.
    let spec = quiet_job(dir.path(), 1000, "1s");
    assert_eq!(
        spec.batch.max_idle,
        Duration::from_millis(200),
        "the default"
    );
    let (stats, acked_after) = run_until_acknowledged(&spec, 5).await;
    assert_eq!((stats.records_in, stats.rows_out), (5, 5));
    assert!(
        acked_after >= Duration::from_secs(1),
        "a trickle is committed at the file age, not when it goes quiet: after {acked_after:?}"
    );
    assert_eq!(parquet_files(&dir.path().join("out")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backlog_is_committed_without_waiting_for_the_file_age() {
    let dir = tempfile::tempdir().unwrap();
    // 50 rows, batches of 10: the output holds full batches when the source goes quiet,
    // so it is committed then, long before the 10-minute file age.
    let spec = quiet_job(dir.path(), 10, "10m");
    let (stats, _) = run_until_acknowledged(&spec, 50).await;
    assert_eq!((stats.records_in, stats.rows_out), (50, 50));
    assert_eq!(stats.commits, 1, "one commit, when the source went quiet");
}

/// Delivers its first events, then nothing for a second (longer than `max_idle`), then
/// the rest, then ends: a range read again whose reader stalls in the middle.
struct StallingSource {
    first: Option<Vec<Event>>,
    rest: Option<Vec<Event>>,
    resume_at: Option<Instant>,
}

#[async_trait]
impl Source for StallingSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        if let Some(first) = self.first.take() {
            self.resume_at = Some(Instant::now() + Duration::from_secs(1));
            return Ok(Some(first));
        }
        if let Some(resume_at) = self.resume_at {
            // Cancel-safe: the rest stays until the sleep completes.
            tokio::time::sleep_until(resume_at.into()).await;
        }
        Ok(self.rest.take())
    }

    async fn ack(&mut self, _delta: &CheckpointDelta) -> Result<(), SourceError> {
        Ok(())
    }
}

#[test]
fn a_redo_whose_reader_stalls_after_a_burst_still_reads_the_rest_of_its_range() {
    let dir = tempfile::tempdir().unwrap();
    // Batches of 10: the first 15 events are a burst, and once they are processed the
    // source is quiet for a second. A redo never commits before its range is whole, so
    // the drained commit must not fall due and starve the reader.
    let spec = quiet_job(dir.path(), 10, "10m");
    let (location, dead_letters) = super::job::open_locations(&spec).unwrap();
    let split = splits::split(0);
    let range = sluice_connectors::PositionRange { first: 0, last: 29 };
    let committer = crate::commit::Committer::for_redo(
        crate::commit::MarkerStore::new(location.clone()),
        dead_letters.clone(),
        None,
        crate::commit::RangeManifest::for_split(&split, range).unwrap(),
    );
    let mut events = one_split_events(30);
    let rest = events.split_off(15);
    let source = StallingSource {
        first: Some(events),
        rest: Some(rest),
        resume_at: None,
    };
    let job = Job::from_parts(&spec, location, dead_letters, committer, Box::new(source));
    // On a thread and runtime of its own, so a loop that never waits cannot starve the
    // bounded wait here.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _ = done.send(runtime.block_on(job.run(CancellationToken::new())));
    });
    let stats = result
        .recv_timeout(Duration::from_secs(30))
        .expect("the redo ends within 30 s of reading its 30 records")
        .unwrap();
    assert_eq!(
        (stats.records_in, stats.rows_out, stats.commits),
        (30, 30, 1)
    );
}
