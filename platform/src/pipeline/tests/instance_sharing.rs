//! An instance is lent for one invocation at a time, not for a whole batch.

use std::sync::Mutex;

use super::*;
use crate::pipeline::{AttemptOutcome, BatchAttempt, BatchObserver};

#[derive(Debug, Default)]
struct Collecting(Mutex<Vec<BatchAttempt>>);

impl BatchObserver for Collecting {
    fn attempt(&self, attempt: BatchAttempt) {
        self.0.lock().unwrap().push(attempt);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_to_retry_leaves_the_only_instance_to_other_batches() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fn.sh"),
        r#"while IFS= read -r line; do
  case "$line" in *'"id":0,'*) exit 1 ;; *) printf '%s\n' "$line" ;; esac
done"#,
    )
    .unwrap();
    let text = r#"name = "pipeline-test"
[trigger.bucket]
url = "memory://in"
[function]
command = ["sh", "fn.sh"]
max_attempts = 2
retry_backoff = "500ms"
[scaling]
max_instances = 1
[batch]
max_records = 10
[output]
url = "out"
partition_by = ["day"]
schema = { id = "int64 not null", day = "date32" }
"#;
    let spec = parse_job(text, &dir.path().join("job.toml"), dir.path(), &|_| None).unwrap();
    // Two splits of 10: split 0's batch (with id 0) fills first and starts first.
    let (source, _acked) = source(events(20));
    let observer = Arc::new(Collecting::default());
    let runtime = JobRuntime {
        observer: Some(Arc::clone(&observer) as _),
        ..JobRuntime::for_job(&spec)
    };
    let stats = Job::over(&spec, source, runtime)
        .await
        .unwrap()
        .run(CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((stats.rows_out, stats.dead_letters), (19, 1));

    let attempts = observer.0.lock().unwrap();
    let split = |partition: i32| splits::origin(partition, 0).split().to_string();
    let of = |partition: i32| {
        let split = split(partition);
        attempts
            .iter()
            .filter(move |attempt| attempt.split == split)
            .collect::<Vec<_>>()
    };
    let (first, second) = (of(0), of(1));
    assert!(
        first.len() >= 2 && first[0].outcome != AttemptOutcome::Ok,
        "{attempts:#?}"
    );
    let retry = first[1].started;
    let other = second
        .iter()
        .find(|attempt| attempt.outcome == AttemptOutcome::Ok)
        .expect("split 1's batch ran");
    assert!(
        other.started < retry,
        "split 1's batch ran only after split 0's retry, so split 0 held the instance through its backoff: {attempts:#?}"
    );
}
