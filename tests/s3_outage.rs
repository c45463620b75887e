//! The S3 endpoint stops answering for 30 s while a Kafka job runs: nothing is lost,
//! nothing is written twice, and the run completes after the endpoint returns. The outage
//! is made by stopping the local endpoint's process (SIGSTOP, then SIGCONT), so requests
//! hang as they would on a dead network path. Meanwhile the job reports itself `degraded`
//! on its status endpoint, with the reason, and `running` again afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The local S3 endpoint's process (`weed`, started by `scripts/services.sh`).
fn s3_process() -> Pid {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
        if comm.trim() == "weed" && cmdline.contains("mini") {
            return Pid::from_raw(pid);
        }
    }
    panic!(
        "this test stops the local S3 endpoint started by scripts/services.sh; no `weed mini` process runs"
    );
}

/// Resumes the endpoint even when the test fails half-way.
struct Paused(Pid);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_s3_outage_loses_nothing_and_duplicates_nothing() {
    const EVENTS: usize = 6000;
    let env = env();
    let job = JobDir::example_on_new_topic(&env, "outage", 2).await;
    let topic = job.topic.clone();
    let first: Vec<_> = (0..EVENTS / 2)
        .map(|i| (format!("u{i}"), Click::numbered(i).json()))
        .collect();
    produce(&env, &topic, &first).await;
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut sluice = Sluice::run_with(&env, &job, "run", &["--http", &http]);
    wait_for("a first commit", Duration::from_secs(60), async || {
        sluice.assert_running();
        !committed(&env, &job.group(), &topic, 2).is_empty()
    })
    .await;

    let weed = s3_process();
    let paused = Paused(weed);
    kill(weed, Signal::SIGSTOP).unwrap();
    let outage = Instant::now();
    let second: Vec<_> = (EVENTS / 2..EVENTS)
        .map(|i| (format!("u{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(&env, &topic, &second).await;
    assert_eq!(
        ends.len(),
        2,
        "the second half reached both partitions: {ends:?}"
    );
    let mut degraded = None;
    while outage.elapsed() < Duration::from_secs(30) {
        sluice.assert_running();
        if degraded.is_none() {
            degraded = job_status(port)
                .await
                .filter(|status| status["state"] == "degraded");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(paused);
    let degraded = degraded.expect("the job reported itself degraded during the outage");
    let reason = degraded["reason"].as_str().unwrap();
    assert!(reason.contains("could not"), "{reason}");

    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(240)).await;
    let status = job_status(port).await.unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert!(status["reason"].is_null(), "{status}");
    sluice.stop_cleanly(Duration::from_secs(20));
    let rows = read_rows(&env, &job.prefix).await;
    let counts = count_ids(&rows);
    assert_eq!(counts.len(), EVENTS, "every record written");
    assert!(counts.values().all(|&n| n == 1), "no record written twice");
}

/// The job's entry on Sluice's `/status`.
async fn job_status(port: u16) -> Option<serde_json::Value> {
    let body = http_get(port, "/status").await?;
    let mut status: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(status["jobs"][0].take())
}
