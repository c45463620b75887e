//! A function that crashes mid-batch once, one that hangs past the timeout once, and one
//! that always fails: the batch is retried, nothing is lost, and nothing is committed
//! before its output is durable.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::poison::{
    EXAMPLE_BATCH_PY, POISONED, RECORDS, assert_exactly_once, assert_poison_letters,
    fix_and_replay, run_poisoned_job, targets, topic_of_clicks,
};
use common::*;

/// Wraps the example transform: when the batch holds one of the target ids (comma
/// separated), misbehave once (`crash` mid-batch or `hang`), recording the misbehaving
/// attempt in `$OUT/<mode>.marker` (`$OUT` is the job folder itself; the function runs in
/// a read-only copy of it). The function that always fails is the poison one.
const FLAKY: &str = r#"
marker = os.path.join(os.environ["OUT"], mode + ".marker")
if hit and not os.path.exists(marker):
    with open(marker, "a") as f:
        f.write("attempt\n")
    if mode == "crash":
        run_batch(lines[: len(lines) // 2], sys.stdout)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "hang":
        time.sleep(1000)
run_batch(lines, sys.stdout)
"#;

const EVENTS: usize = 3000;
const TARGET: usize = 1500;

fn flaky_job(
    env: &Env,
    topic: &str,
    mode: &str,
    settings: impl FnOnce(JobToml) -> JobToml,
) -> JobDir {
    let target = Click::numbered(TARGET).event_id;
    let job = JobDir::new(env, topic, |job| {
        settings(
            job.set(
                "function",
                "command",
                ["python3", "flaky.py", mode, &target],
            )
            .set("function", "mode", "exec")
            .set("function", "retry_backoff", "100ms"),
        )
        .set("function.env", "OUT", "OUT_DIR")
    });
    let out = job.writable_by_functions();
    let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
    job.write("job.toml", &toml.replace("OUT_DIR", &out));
    job.write("flaky.py", &format!("{EXAMPLE_BATCH_PY}{FLAKY}"));
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_batch_is_retried_without_loss_or_duplicates() {
    let env = env();
    let (topic, ends) = topic_of_clicks(&env, "crash", EVENTS).await;
    let job = flaky_job(&env, &topic, "crash", |job| {
        job.set("function", "max_attempts", 3_i64)
    });
    let mut sluice = Sluice::run(&env, &job, "run");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.stop_cleanly(Duration::from_secs(10));

    let attempts = std::fs::read_to_string(job.path().join("crash.marker")).unwrap();
    assert_eq!(attempts.lines().count(), 1, "crashed exactly once");
    let logs = sluice.logs();
    assert!(
        logs.contains("batch failed; retrying"),
        "retry not logged:\n{logs}"
    );
    assert!(
        logs.contains("SIGSEGV") || logs.contains("signal 11"),
        "crash reason not logged:\n{logs}"
    );
    // The crashed attempt's half output must not be in the lake: exactly once.
    assert_exactly_once(&read_rows(&env, &job.prefix).await, EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_past_timeout_is_killed_retried_and_nothing_is_committed_early() {
    let env = env();
    let (topic, ends) = topic_of_clicks(&env, "hang", EVENTS).await;
    let job = flaky_job(&env, &topic, "hang", |job| {
        job.set("function", "timeout", "2s")
            .set("function", "max_attempts", 3_i64)
    });
    let mut sluice = Sluice::run(&env, &job, "run");

    let marker = job.path().join("hang.marker");
    wait_for(
        "the function to hang",
        Duration::from_secs(60),
        async || marker.exists(),
    )
    .await;
    // While the batch holding offset TARGET hangs, its position must not be committed.
    let committed = committed(&env, &job.group(), &topic, 1);
    assert!(
        committed.get(&0).is_none_or(|&o| o <= TARGET as i64),
        "committed {committed:?} past the hanging batch at offset {TARGET}"
    );

    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.stop_cleanly(Duration::from_secs(10));
    let logs = sluice.logs();
    assert!(
        logs.contains("batch failed; retrying"),
        "retry not logged:\n{logs}"
    );
    assert!(
        logs.contains("did not finish within"),
        "timeout not logged:\n{logs}"
    );
    assert_exactly_once(&read_rows(&env, &job.prefix).await, EVENTS);
}

/// With the default destination, dead letters are objects beside the job's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_the_rest_commits_and_replay_lands_them() {
    let env = env();
    let job = run_poisoned_job(&env, "poison", |job| job).await;

    // The 997 others are written once; the 3 are dead letters with their error (the
    // function's stderr), attempts and origin.
    let rows = read_rows(&env, &job.prefix).await;
    let targets = targets();
    assert!(rows.iter().all(|r| !targets.contains(&r.event_id)));
    assert_exactly_once(&rows, RECORDS - POISONED.len());
    let letters = read_dead_letters(&env, &job.prefix).await;
    assert_poison_letters(&letters, &job.topic);

    // After a fix, `sluice dlq replay` lands them, and they are not pending any more.
    fix_and_replay(&env, &job).await;
}
