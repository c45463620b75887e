//! Throughput of one job, Kafka → function → Parquet on S3, over the real local services.
//!
//! ```sh
//! scripts/services.sh start && eval "$(scripts/services.sh env)"
//! cargo build --release && cargo run --release --example kafka_throughput -- [EVENTS] [FUNCTION]
//! ```
//!
//! FUNCTION is `cat` (default: an identity function in stream mode, so the figure is the
//! platform's own cost: consume, frame, pipe, decode, encode Parquet, upload, commit) or
//! `python` (the example clickstream job's transform in stream mode). Prints events/s
//! end to end, the steady rate after the first commit (excluding the consumer group join),
//! and the platform's peak resident memory.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("EVENTS is a number"));
    let function = args.next().unwrap_or_else(|| "cat".to_owned());
    let env = env();
    let topic = unique("bench");
    create_topic(&env, &topic, 4).await;

    let payloads: Vec<(String, String)> = (0..events)
        .map(|i| (format!("user-{}", i % 977), Click::numbered(i).json()))
        .collect();
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let started = Instant::now();
    let ends = produce(&env, &topic, &payloads).await;
    let produced_in = started.elapsed();

    let command = match function.as_str() {
        "cat" => "command = [\"cat\"]\nmode = \"stream\"",
        "python" => "command = [\"python3\", \"transform.py\"]\nmode = \"stream\"",
        other => panic!("unknown function {other:?}: use cat or python"),
    };
    let job = JobDir::new(&env, &topic, command, "");
    if function == "cat" {
        // The identity function passes the raw events through: declare their shape.
        let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
        let toml = toml
            .replace("partition_by = [\"event_date\"]", "partition_by = []")
            .replace(
                "schema = { event_id = \"utf8 not null\", user_id = \"int64\", action = \"utf8\", domain = \"utf8\", path = \"utf8\", ts = \"timestamp_ms\", event_date = \"date32\" }",
                "schema = { event_id = \"utf8 not null\", user_id = \"int64\", url = \"utf8\", ts = \"timestamp_ms\", action = \"utf8\" }",
            )
            .replace("max_records = 1000", "max_records = 10000")
            ;
        job.write("job.toml", &toml);
    }

    let started = Instant::now();
    let mut sluice = Sluice::run(&env, &job, "bench");
    let partitions = ends.keys().max().map_or(0, |p| p + 1);
    let mut first_commit: Option<(Instant, i64)> = None;
    let mut peak_rss_kib = 0;
    loop {
        sluice.assert_running();
        peak_rss_kib = peak_rss_kib.max(rss_kib(sluice.child.id()));
        let committed = committed(&env, &job.group(), &topic, partitions);
        let done: i64 = committed.values().sum();
        if first_commit.is_none() && done > 0 {
            first_commit = Some((Instant::now(), done));
        }
        if ends.iter().all(|(p, end)| committed.get(p) == Some(end)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "timed out; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    peak_rss_kib = peak_rss_kib.max(rss_kib(sluice.child.id()));
    sluice.terminate();
    sluice.wait(Duration::from_secs(30));

    let (first_at, first_done) = first_commit.unwrap();
    let after_first = total
        .saturating_sub(first_at - started)
        .as_secs_f64()
        .max(1e-3);
    let steady = (events as i64 - first_done) as f64 / after_first;
    println!(
        "events:            {events} ({:.0} bytes avg), 4 partitions, function {function} (stream)",
        bytes as f64 / events as f64
    );
    println!(
        "produce:           {:.0} events/s",
        events as f64 / produced_in.as_secs_f64()
    );
    println!(
        "end to end:        {:.2} s, {:.0} events/s (includes start-up and the group join)",
        total.as_secs_f64(),
        events as f64 / total.as_secs_f64()
    );
    println!(
        "first commit at:   {:.2} s ({first_done} events)",
        (first_at - started).as_secs_f64()
    );
    println!("after first commit:{:.0} events/s", steady);
    println!(
        "platform peak RSS: {:.1} MiB (sampled every 100 ms)",
        peak_rss_kib as f64 / 1024.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
