//! `encoding = "arrow"` end to end: Kafka → a pyarrow function over Arrow IPC (stream mode)
//! → Parquet on S3, with rejections dead-lettered. pyarrow is installed (pinned, on first
//! use) where the function's own user can read it: see [`pyarrow_command`].

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use sluice_platform::testing::pyarrow_command;

#[tokio::test(flavor = "multi_thread")]
async fn a_pyarrow_function_writes_parquet_and_rejects_records() {
    let env = env();
    let topic = unique("arrow");
    create_topic(&env, &topic, 2).await;
    let payloads: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("user-{}", i % 977), Click::numbered(i).json()))
        .collect();
    let rejected = (0..3000).filter(|i| i % 977 == 5).count();
    let ends = produce(&env, &topic, &payloads).await;

    let mut command = pyarrow_command();
    command.push("transform_arrow.py".to_owned());
    let job = JobDir::new(&env, &topic, |job| {
        job.set("function", "command", command.as_slice())
            .set("function", "mode", "stream")
            .set("function", "encoding", "arrow")
    });
    std::fs::copy(
        repo_root().join("tests/arrow/transform_arrow.py"),
        job.path().join("transform_arrow.py"),
    )
    .unwrap();
    let mut sluice = Sluice::run(&env, &job, "arrow");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    sluice.wait(Duration::from_secs(30));

    let rows = read_rows(&env, &job.prefix).await;
    assert_eq!(
        rows.len(),
        payloads.len() - rejected,
        "one row per accepted click"
    );
    let ids = count_ids(&rows);
    assert!(ids.values().all(|&n| n == 1), "no duplicates");
    assert!(rows.iter().all(|row| row.user_id != 5));
    assert!(
        rows.iter()
            .all(|row| row.domain == row.domain.to_lowercase())
    );
    assert!(
        rows.iter()
            .all(|row| row.partition_date.starts_with("2026-11-"))
    );
    let dead = read_dead_letters(&env, &job.prefix).await;
    assert_eq!(dead.len(), rejected, "every rejection is a dead letter");
    assert!(
        dead.iter()
            .all(|letter| letter["error"].as_str() == Some("user 5 is not allowed")),
        "{dead:?}"
    );
}
