//! A function that crashes mid-batch once, one that hangs past the timeout once, and one
//! that always fails: the batch is retried, nothing is lost, and nothing is committed
//! before its output is durable.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// Wraps the example transform: when the batch holds `TARGET`, misbehave (once, or every
/// time for `fail`), recording each misbehaving attempt in `<mode>.marker`.
const FLAKY: &str = r#"
import json, os, signal, sys, time
import transform
mode, target = sys.argv[1], sys.argv[2]
marker = mode + ".marker"
lines = [l for l in sys.stdin.read().splitlines() if l]
hit = any(json.loads(l).get("event_id") == target for l in lines)
if hit and (mode == "fail" or not os.path.exists(marker)):
    with open(marker, "a") as f:
        f.write("attempt\n")
    if mode == "crash":
        transform.run_batch(lines[: len(lines) // 2], sys.stdout)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "hang":
        time.sleep(1000)
    else:
        print("refusing this batch", file=sys.stderr)
        sys.exit(1)
transform.run_batch(lines, sys.stdout)
"#;

const EVENTS: usize = 3000;
const TARGET: usize = 1500;

async fn single_partition_topic(
    env: &Env,
    tag: &str,
) -> (String, std::collections::BTreeMap<i32, i64>) {
    let topic = unique(tag);
    create_topic(env, &topic, 1).await;
    let payloads: Vec<_> = (0..EVENTS)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(env, &topic, &payloads).await;
    assert_eq!(ends.get(&0), Some(&(EVENTS as i64)));
    (topic, ends)
}

fn flaky_job(env: &Env, topic: &str, mode: &str, settings: &str) -> JobDir {
    let target = Click::numbered(TARGET).event_id;
    let job = JobDir::new(
        env,
        topic,
        &format!(
            "command = [\"python3\", \"flaky.py\", \"{mode}\", \"{target}\"]\nmode = \"exec\"\nretry_backoff = \"100ms\"\n{settings}"
        ),
        "",
    );
    job.write("flaky.py", FLAKY);
    job
}

fn assert_exactly_once(rows: &[OutputRow], expected: usize) {
    let counts = count_ids(rows);
    assert_eq!(counts.len(), expected, "distinct ids");
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dupes.is_empty(), "duplicated ids: {dupes:?}");
    assert_eq!(rows.len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_batch_is_retried_without_loss_or_duplicates() {
    let env = env();
    let (topic, ends) = single_partition_topic(&env, "crash").await;
    let job = flaky_job(&env, &topic, "crash", "max_attempts = 3");
    let mut sluice = Sluice::run(&env, &job, "run");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());

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
    let (topic, ends) = single_partition_topic(&env, "hang").await;
    let job = flaky_job(&env, &topic, "hang", "timeout = \"2s\"\nmax_attempts = 3");
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
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_is_isolated_and_dead_lettered_while_the_partition_keeps_flowing() {
    let env = env();
    let (topic, ends) = single_partition_topic(&env, "poison").await;
    let job = flaky_job(&env, &topic, "fail", "max_attempts = 2");
    let mut sluice = Sluice::run(&env, &job, "run");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());
    let logs = sluice.logs();
    assert!(
        logs.contains("splitting it to isolate the records at fault"),
        "no bisection logged:\n{logs}"
    );

    // Every other record is written once; the poison one is in the dead letters with its
    // error (the function's stderr), attempts and origin.
    let rows = read_rows(&env, &job.prefix).await;
    let target = Click::numbered(TARGET);
    assert!(rows.iter().all(|r| r.event_id != target.event_id));
    assert_exactly_once(&rows, EVENTS - 1);
    let letters = read_dead_letters(&env, &job.prefix).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["payload"], target.json());
    assert_eq!(letters[0]["attempts"], 2);
    assert_eq!(letters[0]["origin"]["offset"], TARGET as i64);
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.contains("refusing this batch"), "{error}");
}
