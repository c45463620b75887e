//! The pipeline over in-memory doubles: a finite source that records its acks, real
//! function subprocesses, and a `file://` output folder.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_connectors::testing::{Recording, RecordingSource, splits};
use sluice_connectors::{CheckpointDelta, Event, Source, SourceError, VecSource};

use super::*;
use crate::spec::parse_job;

#[test]
fn backoff_grows_and_is_capped() {
    let base = Duration::from_millis(100);
    let first = backoff(base, 1);
    assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
    let third = backoff(base, 3);
    assert!(third >= Duration::from_millis(300) && third <= Duration::from_millis(500));
    assert!(backoff(base, 40) <= Duration::from_secs(75));
}

fn events(count: i64) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let day = 1 + i % 2;
            Event::from_payload(
                format!(r#"{{"id":{i},"day":"2026-01-0{day}"}}"#),
                splits::origin((i % 2) as i32, i / 2),
            )
        })
        .collect()
}

/// A job whose function is `sh fn.sh`, with `command` as the script, retried after 10 ms.
fn job(dir: &Path, command: &str, extra_function: &str) -> JobSpec {
    std::fs::write(dir.join("fn.sh"), command).unwrap();
    job_with_function(
        dir,
        &format!("command = [\"sh\", \"fn.sh\"]\nretry_backoff = \"10ms\"\n{extra_function}"),
    )
}

/// A job over `memory://in` whose `[function]` table holds `function`: batches of 10,
/// output `{ id, day }` partitioned by day.
fn job_with_function(dir: &Path, function: &str) -> JobSpec {
    let text = format!(
        r#"name = "pipeline-test"
[trigger.bucket]
url = "memory://in"
[function]
{function}
[batch]
max_records = 10
[output]
url = "out"
partition_by = ["day"]
schema = {{ id = "int64 not null", day = "date32" }}
"#
    );
    parse_job(&text, &dir.join("job.toml"), dir, &|_| None).unwrap()
}

fn source(events: Vec<Event>) -> (Box<dyn Source>, Recording) {
    let (source, recording) = RecordingSource::new(VecSource::new(events, 7));
    (Box::new(source), recording)
}

/// Events `0..count` of partition 0, all of one day.
fn one_split_events(count: i64) -> Vec<Event> {
    (0..count)
        .map(|i| {
            Event::from_payload(
                format!(r#"{{"id":{i},"day":"2026-01-01"}}"#),
                splits::origin(0, i),
            )
        })
        .collect()
}

/// Opens the job over `source` (which never ends) and runs it until `done` holds, then
/// stops it. Fails if the job ends first, or if `done` does not hold within `within`,
/// with `waiting` saying what was not reached. Returns the run's result and the stopper.
async fn run_until_then_stop(
    spec: &JobSpec,
    source: Box<dyn Source>,
    within: Duration,
    done: impl Fn() -> bool,
    waiting: impl Fn() -> String,
) -> (Result<JobStats, JobError>, JobStopper) {
    let job = Job::over(spec, source, JobRuntime::for_job(spec))
        .await
        .expect("open the job");
    let stopper = job.stopper();
    let run = job.run(CancellationToken::new());
    let stop = async {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(!stopper.is_finished(), "the job ended: {}", waiting());
            assert!(Instant::now() < deadline, "after {within:?}: {}", waiting());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stopper.stop().await;
    };
    let (result, ()) = tokio::join!(run, stop);
    (result, stopper)
}

/// Opens the job over `source` and runs it to the source's end.
async fn run_over(spec: &JobSpec, source: Box<dyn Source>) -> Result<JobStats, JobError> {
    Job::over(spec, source, JobRuntime::for_job(spec))
        .await
        .expect("open the job")
        .run(CancellationToken::new())
        .await
}

/// An observer that keeps every attempt.
#[derive(Debug, Default)]
struct Collecting(std::sync::Mutex<Vec<BatchAttempt>>);

impl BatchObserver for Collecting {
    fn attempt(&self, attempt: BatchAttempt) {
        self.0.lock().unwrap().push(attempt);
    }
}

/// [`run_over`] with an observer: the job's stats and every attempt it reported.
async fn run_observed(spec: &JobSpec, source: Box<dyn Source>) -> (JobStats, Vec<BatchAttempt>) {
    let observer = Arc::new(Collecting::default());
    let runtime = JobRuntime {
        observer: Some(Arc::clone(&observer) as _),
        ..JobRuntime::for_job(spec)
    };
    let stats = Job::over(spec, source, runtime)
        .await
        .expect("open the job")
        .run(CancellationToken::new())
        .await
        .expect("the job runs to the source's end");
    let attempts = std::mem::take(&mut *observer.0.lock().unwrap());
    (stats, attempts)
}

fn parquet_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_written_then_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(dir.path(), "exec cat", "");
    let (source, acked) = source(events(45));
    let stats = run_over(&spec, source).await.unwrap();

    assert_eq!(stats.records_in, 45);
    assert_eq!(stats.rows_out, 45);
    // One open batch per partition: 23 events of partition 0 and 22 of partition 1 make
    // 10 + 10 + 3 and 10 + 10 + 2.
    assert_eq!(stats.batches, 6, "max_records = 10, per partition");
    let files = parquet_files(&dir.path().join("out"));
    assert!(
        files.iter().any(|f| f.contains("/day=2026-01-01/")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.contains("/day=2026-01-02/")),
        "{files:?}"
    );
    assert_eq!(
        acked.acked_through(),
        // 45 events alternate partitions: ids 0,2,…,44 are offsets 0..=22 of partition 0,
        // ids 1,3,…,43 offsets 0..=21 of partition 1.
        vec![
            (splits::split(0).to_string(), 22),
            (splits::split(1).to_string(), 21)
        ]
    );
}

/// Every dead letter under the job's default destination.
fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let dead_dir = dir.join("out/_sluice/dead_letters");
    let Ok(entries) = std::fs::read_dir(&dead_dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_does_not_fit_is_traced_to_its_record_by_bisection() {
    let dir = tempfile::tempdir().unwrap();
    // Any batch holding id 13 answers with a row the schema refuses (id must be an int64).
    let spec = job(
        dir.path(),
        r#"while IFS= read -r line; do
  case "$line" in *'"id":13,'*) echo '{"id": "thirteen"}' ;; *) printf '%s
' "$line" ;; esac
done"#,
        "max_attempts = 2",
    );
    let (source, acked) = source(events(30));
    let stats = run_over(&spec, source).await.unwrap();

    assert_eq!(stats.rows_out, 29, "every other record is written");
    assert_eq!(stats.dead_letters, 1);
    assert!(stats.bisections >= 3, "10 → 5 → 2/3 → 1: {stats:?}");
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["payload"], r#"{"id":13,"day":"2026-01-02"}"#);
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("does not fit the output schema") && error.contains("\"id\""),
        "{error}"
    );
    // The partition keeps flowing: everything is acknowledged.
    assert_eq!(
        acked.acked_through(),
        vec![
            (splits::split(0).to_string(), 14),
            (splits::split(1).to_string(), 14)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_crashes_the_function_is_dead_lettered_after_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(
        dir.path(),
        r#"input=$(cat); case "$input" in *'"id":7,'*) echo 'cannot handle 7' >&2; exit 1 ;; esac; printf '%s
' "$input""#,
        "max_attempts = 2",
    );
    let (source, acked) = source(events(20));
    let stats = run_over(&spec, source).await.unwrap();

    assert_eq!(stats.rows_out, 19);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["payload"], r#"{"id":7,"day":"2026-01-02"}"#);
    assert_eq!(
        letters[0]["attempts"], 2,
        "a single record gets every attempt"
    );
    assert_eq!(letters[0]["origin"], splits::origin(1, 3).to_json());
    let error = letters[0]["error"].as_str().unwrap();
    assert!(
        error.contains("exited with code 1") && error.contains("cannot handle 7"),
        "{error}"
    );
    assert_eq!(
        acked.acked_through(),
        vec![
            (splits::split(0).to_string(), 9),
            (splits::split(1).to_string(), 9)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_cannot_start_stops_the_job_acknowledging_only_earlier_batches() {
    let dir = tempfile::tempdir().unwrap();
    // The program deletes itself after its first batch: no split of a later batch can
    // help, so the job stops instead of dead-lettering healthy records. It lives outside
    // the job folder, whose staged copy the function cannot change, in a folder its user
    // may write (outside /tmp, which the function sees as its own, and the checkout).
    let spec = job(dir.path(), "", "");
    let bin_base = Path::new(crate::function::SHARED_TEST_DIR);
    std::fs::create_dir_all(bin_base).unwrap();
    let bin = tempfile::tempdir_in(bin_base).unwrap();
    std::fs::set_permissions(
        bin.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let script = bin.path().join("once.sh");
    std::fs::write(
        &script,
        "#!/bin/sh
cat
rm -f \"$0\"
",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut spec = spec;
    spec.function.command = vec![script.display().to_string()];
    let (source, acked) = source(events(30));
    let error = run_over(&spec, source).await.unwrap_err();

    let message = error.to_string();
    assert!(message.contains("could not start function"), "{message}");
    assert!(
        message.contains(&format!("{}:0..=9", splits::split(1))),
        "names the positions: {message}"
    );
    assert!(
        dead_letters(dir.path()).is_empty(),
        "healthy records are not dead-lettered"
    );
    // Only partition 0's batch (offsets 0..=9, all on day 1) is acknowledged.
    assert_eq!(
        acked.acked_through(),
        vec![(splits::split(0).to_string(), 9)]
    );
    assert_eq!(
        parquet_files(&dir.path().join("out")),
        vec![format!(
            "{}/day=2026-01-01/{}-00000000000000000000-00000000000000000009.parquet",
            dir.path().join("out").display(),
            splits::owner(0)
        )],
        "partition 0's batch written, named from its range"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_go_to_dead_letters_before_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    // Rejects the record at index 2 of every batch (one batch of 10 per partition:
    // ids 4 and 5), passes the others through.
    let script = r#"i=0; while IFS= read -r line; do
  if [ "$i" = 2 ]; then echo "{\"\$error\": {\"record\": 2, \"message\": \"bad day\"}}"; else printf '%s\n' "$line"; fi
  i=$((i+1))
done"#;
    let spec = job(dir.path(), script, "");
    let (source, acked) = source(events(20));
    let stats = run_over(&spec, source).await.unwrap();

    assert_eq!(stats.rows_out, 18);
    assert_eq!(stats.record_errors, 2);
    let dead_dir = dir.path().join("out/_sluice/dead_letters");
    let mut names: Vec<String> = std::fs::read_dir(&dead_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        {
            let mut expected: Vec<String> = (0..2)
                .map(|n| {
                    format!(
                        "{}-00000000000000000000-00000000000000000009.ndjson",
                        splits::owner(n)
                    )
                })
                .collect();
            expected.sort();
            expected
        },
        "one object per range, named from it"
    );
    let letters: Vec<serde_json::Value> = std::fs::read_dir(&dead_dir)
        .unwrap()
        .flat_map(|entry| {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut ids: Vec<String> = letters
        .iter()
        .map(|l| l["payload"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            r#"{"id":4,"day":"2026-01-01"}"#.to_owned(),
            r#"{"id":5,"day":"2026-01-02"}"#.to_owned()
        ]
    );
    assert!(
        letters
            .iter()
            .all(|l| l["error"] == "bad day" && l["origin"]["bucket"] == splits::BUCKET)
    );
    assert_eq!(
        acked.acked_through(),
        vec![
            (splits::split(0).to_string(), 9),
            (splits::split(1).to_string(), 9)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_open_batch_and_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(dir.path(), "exec cat", "");
    let shutdown = CancellationToken::new();
    let (recording, acked) = RecordingSource::new(EndlessSource {
        next: 0,
        shutdown: shutdown.clone(),
    });
    let job = Job::over(&spec, Box::new(recording), JobRuntime::for_job(&spec))
        .await
        .unwrap();
    let stats = job.run(shutdown).await.unwrap();
    // The source asked for shutdown after handing over 3 events: fewer than a batch.
    assert_eq!(stats.records_in, 3);
    assert_eq!(stats.rows_out, 3);
    assert_eq!(
        acked.acked_through(),
        vec![(splits::split(0).to_string(), 2)]
    );
}

/// Hands over one event per call; after the third, requests shutdown and then waits
/// forever like a broker with no more messages.
struct EndlessSource {
    next: i64,
    shutdown: CancellationToken,
}

#[async_trait]
impl Source for EndlessSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        if self.next == 3 {
            self.shutdown.cancel();
            std::future::pending::<()>().await;
        }
        let event = Event::from_payload(
            format!(r#"{{"id":{},"day":"2026-01-01"}}"#, self.next),
            splits::origin(0, self.next),
        );
        self.next += 1;
        Ok(Some(vec![event]))
    }

    async fn ack(&mut self, _delta: &CheckpointDelta) -> Result<(), SourceError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_max_record_age_are_dead_lettered_without_running() {
    let dir = tempfile::tempdir().unwrap();
    // The function refuses to see an old record: if one reached it, the batch would fail.
    let spec = job(
        dir.path(),
        r#"input=$(cat); case "$input" in *'"old":true'*) exit 3 ;; esac; printf '%s
' "$input""#,
        "max_attempts = 1\nmax_record_age = \"1h\"",
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let events: Vec<Event> = (0..20)
        .map(|i| {
            let old = i % 5 == 0;
            let mut event = Event::from_payload(
                format!(r#"{{"id":{i},"day":"2026-01-01","old":{old}}}"#),
                splits::origin(0, i),
            );
            event.timestamp_ms = Some(if old { now_ms - 2 * 3_600_000 } else { now_ms });
            event
        })
        .collect();
    let (source, acked) = source(events);
    let stats = run_over(&spec, source).await.unwrap();

    assert_eq!(stats.rows_out, 16);
    assert_eq!((stats.expired, stats.dead_letters), (4, 4));
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 4);
    for letter in &letters {
        assert!(
            letter["payload"]
                .as_str()
                .unwrap()
                .contains(r#""old":true"#)
        );
        assert!(
            letter["error"].as_str().unwrap().contains("max_record_age"),
            "{letter}"
        );
        assert_eq!(letter["attempts"], 0);
    }
    assert_eq!(
        acked.acked_through(),
        vec![(splits::split(0).to_string(), 19)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_commits_and_acknowledges_everything_it_took_in() {
    let dir = tempfile::tempdir().unwrap();
    let spec = job(dir.path(), "exec cat", "");
    let (source, acked) = RecordingSource::new(VecSource::new(events(45), 7));
    let source = source.endless();
    let (stats, stopper) = run_until_then_stop(
        &spec,
        Box::new(source),
        Duration::from_secs(30),
        || acked.exhausted(),
        || "events not taken in".to_owned(),
    )
    .await;

    let stats = stats.unwrap();
    assert!(stopper.is_finished());
    assert_eq!(
        (stats.records_in, stats.rows_out),
        (45, 45),
        "every event written"
    );
    assert_eq!(
        acked.acked_through(),
        vec![
            (splits::split(0).to_string(), 22),
            (splits::split(1).to_string(), 21)
        ],
        "and acknowledged"
    );
}
mod ack_pressure;
mod arrow_input;
mod instance_sharing;
mod observer;
mod quiet_source;
mod secrets;
