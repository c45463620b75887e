//! The autoscaling pool over the real local services: throughput with 1 vs 4 instances of
//! a function that sleeps 20 ms per batch, autoscaler reaction time from a backlog
//! appearing to 4 busy instances, scale-to-zero time after the drain, and cold starts.
//!
//! ```sh
//! scripts/services.sh start && eval "$(scripts/services.sh env)"
//! cargo build --release --bin sluice --example autoscaling
//! target/release/examples/autoscaling [RECORDS]
//! ```
//!
//! The function is tests/autoscaling/sleepy.py (stream mode, envelope input): each batch
//! of 50 records sleeps 20 ms, then answers. Throughput is measured over the function's
//! own log, from the first batch's start to the last batch's end, so the consumer-group
//! join and the final commit are not in it.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::sleepy::{records, sleepy_job};
use common::*;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(8_000, |a| a.parse().expect("RECORDS is a number"));
    let one = throughput(n, 1).await;
    let four = throughput(n, 4).await;
    println!(
        "throughput, 20 ms per 50-record batch: 1 instance {:.0} records/s, 4 instances {:.0} records/s ({:.2}x)",
        one,
        four,
        four / one
    );
    reaction_and_scale_to_zero(n).await;
}

/// Records per second from the first batch's start to the last batch's end.
async fn throughput(n: usize, instances: u32) -> f64 {
    let env = env();
    let topic = unique("bench-scale");
    create_topic(&env, &topic, 4).await;
    let ends = produce(&env, &topic, &records(n, |i| format!("k{i}"))).await;
    let (job, log) = sleepy_job(&env, &topic, |job| {
        job.set("scaling", "max_instances", i64::from(instances))
            .set("scaling", "idle_timeout", "30s")
            .set("batch", "max_records", 50_i64)
            .set("batch", "max_wait", "200ms")
            .set("function.env", "SLEEP_MS", "20")
    });
    let mut sluice = Sluice::run_with(&env, &job, "bench", &["--node-instances", "8"]);
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(600)).await;
    sluice.terminate();
    sluice.wait(Duration::from_secs(30));
    let text = std::fs::read_to_string(log).unwrap();
    let times: Vec<u128> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(1)?.parse().ok())
        .collect();
    let span = (times.iter().max().unwrap() - times.iter().min().unwrap()) as f64 / 1e9;
    n as f64 / span
}

async fn busy(port: u16) -> u64 {
    let Some(body) = http_get(port, "/status").await else {
        return 0;
    };
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["jobs"][0]["instances"]["busy"].as_u64().unwrap_or(0)
}

async fn reaction_and_scale_to_zero(n: usize) {
    let env = env();
    let topic = unique("bench-react");
    create_topic(&env, &topic, 4).await;
    let (job, log) = sleepy_job(&env, &topic, |job| {
        job.set("scaling", "max_instances", 4_i64)
            .set("scaling", "idle_timeout", "2s")
            .set("batch", "max_records", 50_i64)
            .set("batch", "max_wait", "100ms")
            .set("function.env", "SLEEP_MS", "20")
    });
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut sluice = Sluice::run_with(
        &env,
        &job,
        "bench",
        &["--http", &http, "--node-instances", "8"],
    );
    // Warm up: one record through (the group has joined), then wait for zero processes.
    let first = produce(&env, &topic, &records(1, |_| "warm".to_owned())).await;
    wait_committed(&env, &job, &mut sluice, &first, Duration::from_secs(60)).await;
    wait_for("scale to zero", Duration::from_secs(30), async || {
        processes_with(&job.name).is_empty()
    })
    .await;
    std::fs::remove_file(&log).unwrap();

    let appeared = Instant::now();
    let payloads = records(n * 4, |i| format!("k{i}"));
    let producing = tokio::spawn({
        let topic = topic.clone();
        async move { produce(&env, &topic, &payloads).await }
    });
    let mut first_busy = None;
    while busy(port).await < 4 {
        if first_busy.is_none() && busy(port).await > 0 {
            first_busy = Some(appeared.elapsed());
        }
        assert!(
            appeared.elapsed() < Duration::from_secs(60),
            "never reached 4 busy instances"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reaction = appeared.elapsed();
    let ends = producing.await.unwrap();
    let env = common::env();
    let mut all = ends.clone();
    for (partition, end) in &first {
        all.entry(*partition)
            .and_modify(|e| *e = (*e).max(*end))
            .or_insert(*end);
    }
    wait_committed(&env, &job, &mut sluice, &all, Duration::from_secs(600)).await;
    // The drain: the last batch's end in the function's log.
    let last_end = Instant::now();
    wait_for("scale to zero", Duration::from_secs(30), async || {
        processes_with(&job.name).is_empty()
    })
    .await;
    let to_zero = last_end.elapsed();
    let status: serde_json::Value =
        serde_json::from_str(&http_get(port, "/status").await.unwrap()).unwrap();
    let cold = &status["jobs"][0]["cold_starts"];
    println!(
        "reaction: backlog produced → first busy instance {:?}, → 4 busy instances {:?}",
        first_busy.unwrap_or(reaction),
        reaction
    );
    println!("scale to zero after the drain was committed: {to_zero:?} (idle_timeout 2 s)");
    println!(
        "cold starts (spawn → $ready, python3 sleepy.py): {} started, p50 {} ms, p99 {} ms",
        cold["count"], cold["p50_ms"], cold["p99_ms"]
    );
    sluice.terminate();
    sluice.wait(Duration::from_secs(30));
}
