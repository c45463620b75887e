//! Throughput and memory of one job, Kafka → function → Parquet on S3, over the real local
//! services.
//!
//! ```sh
//! scripts/services.sh start && eval "$(scripts/services.sh env)"
//! cargo build --release --bin sluice --example kafka_throughput
//! target/release/examples/kafka_throughput [EVENTS] [FUNCTION] [PARTITIONS] [MAX_FILE_AGE]
//! ```
//!
//! FUNCTION is `cat` (default: an identity function in stream mode, so the figure is the
//! platform's own cost: consume, frame, pipe, decode, encode Parquet, upload, commit) or
//! `python` (the example clickstream job's transform in stream mode). EVENTS (default
//! 200,000) go to a topic of PARTITIONS partitions (default 4) before the job starts, so
//! the job meets them as a backlog; MAX_FILE_AGE is the job's `output.max_file_age`
//! (default `1s`). Prints events/s end to end, the steady rate after the first commit
//! (excluding the consumer group join), peak resident memory of the platform and its
//! function instances (the process tree, sampled every 100 ms), and the Parquet files and
//! row groups the job wrote.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use parquet::file::reader::{FileReader as _, SerializedFileReader};

/// Events generated and produced at a time, so a large backlog never sits in this
/// program's memory whole.
const PRODUCE_SLICE: usize = 200_000;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("EVENTS is a number"));
    let function = args.next().unwrap_or_else(|| "cat".to_owned());
    let partitions: i32 = args
        .next()
        .map_or(4, |a| a.parse().expect("PARTITIONS is a number"));
    let max_file_age = args.next().unwrap_or_else(|| "1s".to_owned());
    let env = env();
    let topic = unique("bench");
    create_topic(&env, &topic, partitions).await;

    let started = Instant::now();
    let mut ends = BTreeMap::new();
    let mut bytes = 0;
    for first in (0..events).step_by(PRODUCE_SLICE) {
        let payloads: Vec<(String, String)> = (first..events.min(first + PRODUCE_SLICE))
            .map(|i| (format!("user-{}", i % 977), Click::numbered(i).json()))
            .collect();
        bytes += payloads.iter().map(|(_, p)| p.len()).sum::<usize>();
        for (partition, end) in produce(&env, &topic, &payloads).await {
            let known = ends.entry(partition).or_insert(0);
            *known = end.max(*known);
        }
    }
    let produced_in = started.elapsed();

    let job = JobDir::new(&env, &topic, |job| {
        let job = job.set("function", "mode", "stream").set(
            "output",
            "max_file_age",
            max_file_age.as_str(),
        );
        match function.as_str() {
            // The identity function passes the raw events through: declare their shape.
            "cat" => job
                .set("function", "command", ["cat"])
                .set("output", "partition_by", raw("[]"))
                .schema(r#"{ event_id = "utf8 not null", user_id = "int64", url = "utf8", ts = "timestamp_ms", action = "utf8" }"#)
                .set("batch", "max_records", 10_000_i64),
            "python" => job.set("function", "command", ["python3", "transform.py"]),
            other => panic!("unknown function {other:?}: use cat or python"),
        }
    });

    let started = Instant::now();
    let mut sluice = Sluice::run(&env, &job, "bench");
    let probe = CommittedProbe::new(&env, &job.group());
    let mut first_commit: Option<(Instant, i64)> = None;
    let mut peak_tree_kib = 0;
    let mut platform_hwm_kib = 0;
    loop {
        sluice.assert_running();
        peak_tree_kib = peak_tree_kib.max(tree_rss_kib(sluice.child.id()));
        platform_hwm_kib = platform_hwm_kib.max(status_kib(sluice.child.id(), "VmHWM:"));
        let committed = probe.committed(&topic, partitions);
        let done: i64 = committed.values().sum();
        if first_commit.is_none() && done > 0 {
            first_commit = Some((Instant::now(), done));
        }
        if ends.iter().all(|(p, end)| committed.get(p) == Some(end)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "timed out; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    peak_tree_kib = peak_tree_kib.max(tree_rss_kib(sluice.child.id()));
    platform_hwm_kib = platform_hwm_kib.max(status_kib(sluice.child.id(), "VmHWM:"));
    sluice.terminate();
    sluice.wait(Duration::from_secs(30));

    let (first_at, first_done) = first_commit.unwrap();
    let after_first = total
        .saturating_sub(first_at - started)
        .as_secs_f64()
        .max(1e-3);
    let steady = (events as i64 - first_done) as f64 / after_first;
    let (files, row_groups, rows, file_bytes) = output_shape(&env, &job.prefix).await;
    println!(
        "events:            {events} ({:.0} bytes avg), {partitions} partitions, function {function} (stream), max_file_age {max_file_age}",
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
    println!("after first commit:{steady:.0} events/s");
    println!(
        "peak RSS:          {:.1} MiB platform and functions (sampled every 100 ms); platform high-water mark {:.1} MiB",
        peak_tree_kib as f64 / 1024.0,
        platform_hwm_kib as f64 / 1024.0
    );
    println!(
        "output:            {files} files, {row_groups} row groups, {rows} rows, {:.1} MiB ({:.1} MiB per file)",
        file_bytes as f64 / (1 << 20) as f64,
        file_bytes as f64 / (1 << 20) as f64 / files.max(1) as f64
    );
}

/// Files, row groups, rows and bytes of the Parquet output under `prefix`.
async fn output_shape(env: &Env, prefix: &str) -> (usize, usize, i64, usize) {
    let objects = parquet_objects(env, prefix).await;
    let (mut row_groups, mut rows, mut bytes) = (0, 0, 0);
    for (_, data) in &objects {
        bytes += data.len();
        let reader = SerializedFileReader::new(data.clone()).unwrap();
        row_groups += reader.metadata().num_row_groups();
        rows += reader.metadata().file_metadata().num_rows();
    }
    (objects.len(), row_groups, rows, bytes)
}
