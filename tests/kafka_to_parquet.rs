//! End to end over real services: 20,000 keyed click events on 3 partitions of a fresh
//! topic → the example job (exec and stream mode) → Parquet on the S3 endpoint. Every
//! input appears exactly once with the transformed values, in the right Hive partition,
//! and the group's committed offsets reach the end of every partition.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const EVENTS: usize = 20_000;

async fn run_example_job(mode: &str) {
    let env = env();
    let topic = unique(&format!("clicks-{mode}"));
    create_topic(&env, &topic, 3).await;
    let clicks: Vec<Click> = (0..EVENTS).map(Click::numbered).collect();
    let payloads: Vec<(String, String)> = clicks
        .iter()
        .map(|c| (format!("user-{}", c.user_id), c.json()))
        .collect();
    let ends = produce(&env, &topic, &payloads).await;
    assert_eq!(ends.len(), 3, "events reached every partition: {ends:?}");
    assert_eq!(ends.values().sum::<i64>(), EVENTS as i64);

    let job = JobDir::new(&env, &topic, |job| {
        job.set("function", "command", ["python3", "transform.py"])
            .set("function", "mode", mode)
            .set("function", "timeout", "30s")
    });
    let mut sluice = Sluice::run(&env, &job, "run");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(240)).await;
    sluice.stop_cleanly(Duration::from_secs(10));

    assert_rows_are_the_clicks(&read_rows(&env, &job.prefix).await, &clicks);
    let logs = sluice.logs();
    assert!(
        !logs.contains("do-not-leak"),
        "a platform secret reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_job_in_exec_mode_writes_every_event_once() {
    run_example_job("exec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_job_in_stream_mode_writes_every_event_once() {
    run_example_job("stream").await;
}

#[test]
fn rfc3339_helper_is_right() {
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.500Z"), 1500);
    assert_eq!(
        parse_rfc3339_ms("2026-11-20T00:00:00.000Z"),
        1_795_132_800_000
    );
}
