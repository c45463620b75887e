//! The observer sees every batch attempt, and the attempts account for every record.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_observed_and_the_attempts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    // Crashes on id 7 (after a word on stderr), rejects id 12, passes the others.
    let script = r#"i=0; while IFS= read -r line; do
  case "$line" in
    *'"id":7,'*) echo 'cannot handle 7' >&2; exit 1 ;;
    *'"id":12,'*) echo "{\"\$error\": {\"record\": $i, \"message\": \"no 12\"}}" ;;
    *) printf '%s\n' "$line" ;;
  esac
  i=$((i+1))
done"#;
    let spec = job(dir.path(), script, "max_attempts = 2");
    let (source, _acked) = source(events(20));
    let (stats, attempts) = run_observed(&spec, source).await;
    assert_eq!((stats.rows_out, stats.dead_letters), (18, 2));

    let total = |f: fn(&BatchAttempt) -> u64, keep: fn(&BatchAttempt) -> bool| -> u64 {
        attempts.iter().filter(|a| keep(a)).map(f).sum()
    };
    let ok = |a: &BatchAttempt| a.outcome == AttemptOutcome::Ok;
    let failed = |a: &BatchAttempt| a.outcome != AttemptOutcome::Ok;
    let all = |_: &BatchAttempt| true;
    assert_eq!(
        total(|a| a.rows_out + a.rejected + a.dead_letters, all),
        20,
        "{attempts:#?}"
    );
    assert_eq!(
        total(|a| a.records_in, ok),
        total(|a| a.rows_out + a.rejected, ok)
    );
    assert_eq!(
        total(|a| a.records_in, ok) + total(|a| a.dead_letters, failed),
        20
    );
    assert_eq!(total(|a| a.rejected, all), 1);
    assert_eq!(total(|a| a.dead_letters, all), 1);
    let failures: Vec<&BatchAttempt> = attempts.iter().filter(|a| failed(a)).collect();
    // The batch twice, then halves once each down to the record, which gets two.
    assert!(failures.len() >= 4, "{failures:#?}");
    for failure in &failures {
        assert_eq!(failure.outcome, AttemptOutcome::FunctionError);
        assert_eq!(failure.split, splits::split(1).to_string());
        assert!((failure.first_position..=failure.last_position).contains(&3));
        assert!(
            failure.stderr_tail.contains("cannot handle 7"),
            "{failure:?}"
        );
        assert!(
            failure
                .instance
                .as_deref()
                .is_some_and(|i| i.starts_with("pipeline-test-"))
        );
        assert!(failure.cold_start, "exec mode starts a process per attempt");
    }
    let last = failures.iter().find(|a| a.dead_letters == 1).unwrap();
    assert_eq!((last.records_in, last.first_position), (1, 3));
    let mut ids: Vec<&str> = attempts.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), attempts.len(), "ids are unique");
}
