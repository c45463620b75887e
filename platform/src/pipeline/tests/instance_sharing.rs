//! An instance is lent for one invocation at a time, not for a whole batch.

use super::*;

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
    let spec = job_with_function(
        dir.path(),
        r#"command = ["sh", "fn.sh"]
max_attempts = 2
retry_backoff = "500ms""#,
    );
    assert_eq!(spec.scaling.max_instances, 1, "one instance, the default");
    // Two splits of 10: split 0's batch (with id 0) fills first and starts first.
    let (source, _acked) = source(events(20));
    let (stats, attempts) = run_observed(&spec, source).await;
    assert_eq!((stats.rows_out, stats.dead_letters), (19, 1));

    let of = |partition: i32| {
        let split = splits::split(partition).to_string();
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
