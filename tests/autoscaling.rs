//! End to end over real services: the autoscaling pool (`[scaling]`).
//!
//! - A 4-partition backlog runs 4 instances at once (seen in the process table and on
//!   `/status`), the job scales to zero function processes within `idle_timeout` + 2 s
//!   after the topic drains, and a message arriving after that is processed by a cold
//!   start and committed within `max_wait` + cold start + 1 s.
//! - Order: with `ordering = "key"`, 4 instances and random sleeps, batches finish out of
//!   order, committed offsets never pass an unfinished batch, and records of one key are
//!   processed in input order.
//! - Scale-down while a long batch runs: the idle instance is stopped, the long batch
//!   completes and commits, nothing is killed mid-batch.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use common::sleepy::*;
use common::*;

#[derive(Debug)]
struct Row {
    id: i64,
    key: String,
    partition: i32,
    offset: i64,
    processed_ns: i64,
}

async fn rows(env: &Env, prefix: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (_, bytes) in parquet_objects(env, prefix).await {
        for batch in record_batches(bytes) {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let (id, key, partition, offset, processed) = (
                column("id"),
                column("key"),
                column("partition"),
                column("offset"),
                column("processed_ns"),
            );
            for i in 0..batch.num_rows() {
                rows.push(Row {
                    id: id.as_primitive::<Int64Type>().value(i),
                    key: key.as_string::<i32>().value(i).to_owned(),
                    partition: partition.as_primitive::<Int32Type>().value(i),
                    offset: offset.as_primitive::<Int64Type>().value(i),
                    processed_ns: processed.as_primitive::<Int64Type>().value(i),
                });
            }
        }
    }
    rows
}

fn assert_exactly_once(rows: &[Row], n: usize) {
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for row in rows {
        *seen.entry(row.id).or_default() += 1;
    }
    assert_eq!(seen.len(), n, "distinct ids");
    assert!(seen.values().all(|&c| c == 1), "every id exactly once");
}

async fn status(port: u16) -> Option<serde_json::Value> {
    let body = http_get(port, "/status").await?;
    let mut status: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(status["jobs"][0].take())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_out_to_the_backlog_then_to_zero_then_cold_starts_on_new_work() {
    const N: usize = 4_000;
    let env = env();
    let topic = unique("scale");
    create_topic(&env, &topic, 4).await;
    let ends = produce(&env, &topic, &records(N, |i| format!("k{i}"))).await;
    assert_eq!(ends.len(), 4, "{ends:?}");
    let (job, _log) = sleepy_job(&env, &topic, |job| {
        job.set("scaling", "max_instances", 4_i64)
            .set("scaling", "idle_timeout", "2s")
            .set("batch", "max_records", 50_i64)
            .set("batch", "max_wait", "200ms")
            .set("function.env", "SLEEP_MS", "150")
    });
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut sluice = Sluice::run_with(
        &env,
        &job,
        "run",
        &["--http", &http, "--node-instances", "8"],
    );

    // 80 batches of 150 ms: several seconds of backlog. Watch both views.
    let mut most_processes = 0;
    let mut most_busy = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sluice.assert_running();
        most_processes = most_processes.max(processes_with(&job.name).len());
        if let Some(status) = status(port).await {
            most_busy = most_busy.max(status["instances"]["busy_peak"].as_u64().unwrap());
        }
        let committed = committed(&env, &job.group(), &topic, 4);
        if ends.iter().all(|(p, end)| committed.get(p) == Some(end)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog not drained; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        most_processes,
        4,
        "4 function processes at once; logs:\n{}",
        sluice.logs()
    );
    // Sampled `busy` can catch an instance between two batches; the peak cannot.
    assert_eq!(most_busy, 4, "4 instances busy at once on /status");
    let drained = Instant::now();
    assert_exactly_once(&rows(&env, &job.prefix).await, N);

    // Scale to zero: idle_timeout (2 s) + 2 s.
    wait_for(
        "zero function processes",
        Duration::from_secs(4),
        async || processes_with(&job.name).is_empty(),
    )
    .await;
    let to_zero = drained.elapsed();
    let status = status(port).await.unwrap();
    assert_eq!(status["instances"]["busy"], 0);
    assert_eq!(status["instances"]["idle"], 0, "{status}");
    assert_eq!(status["state"], "running");
    let cold_before = status["cold_starts"]["count"].as_u64().unwrap();
    assert!(cold_before >= 4, "{status}");
    eprintln!("scaled to zero {to_zero:?} after the drain");

    // New work after scale to zero: a cold start, committed within max_wait (200 ms) +
    // cold start + 1 s.
    let sent = Instant::now();
    let more = produce(
        &env,
        &topic,
        &[(
            "late".to_owned(),
            r#"{"id":4000000,"key":"late"}"#.to_owned(),
        )],
    )
    .await;
    let (partition, end) = more.into_iter().next().unwrap();
    loop {
        let committed = committed(&env, &job.group(), &topic, 4);
        if committed.get(&partition) == Some(&end) {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "late message not committed; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latency = sent.elapsed();
    let status = self::status(port).await.unwrap();
    assert_eq!(
        status["cold_starts"]["count"].as_u64().unwrap(),
        cold_before + 1,
        "{status}"
    );
    let cold_ms = status["cold_starts"]["last_ms"].as_f64().unwrap();
    let bound = Duration::from_millis(200)
        + Duration::from_secs_f64(cold_ms / 1000.0)
        + Duration::from_secs(1);
    assert!(
        latency <= bound,
        "late message committed after {latency:?} (cold start {cold_ms} ms), bound {bound:?}"
    );
    eprintln!("late message committed after {latency:?}, cold start {cold_ms:.1} ms");

    sluice.stop_cleanly(Duration::from_secs(20));
}

/// One line of sleepy.py's batch log.
#[derive(Debug, Clone, Copy)]
struct Logged {
    start: bool,
    at_ns: u128,
    partition: i32,
    first: i64,
}

fn read_log(path: &Path) -> Vec<Logged> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|line| line.ends_with(|c: char| c.is_ascii_digit()))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f.len() == 5).then(|| Logged {
                start: f[0] == "start",
                at_ns: f[1].parse().unwrap(),
                partition: f[2].parse().unwrap(),
                first: f[3].parse().unwrap(),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_stay_in_offset_order_and_keys_in_input_order_when_batches_finish_out_of_order() {
    const N: usize = 1_500;
    let env = env();
    let topic = unique("order");
    create_topic(&env, &topic, 4).await;
    // Keys in blocks of 50 records, each block on one partition: of two batches of 25
    // that follow each other, the pair within a block shares its key (it must run one
    // after the other), the pair across blocks does not (it may overlap and finish out of
    // order).
    let ends = produce(&env, &topic, &records(N, |i| format!("block-{}", i / 50))).await;
    let (job, log) = sleepy_job(&env, &topic, |job| {
        job.set("scaling", "max_instances", 4_i64)
            .set("scaling", "ordering", "key")
            .set("scaling", "idle_timeout", "30s")
            .set("batch", "max_records", 25_i64)
            .set("batch", "max_wait", "100ms")
            .set("function.env", "SLEEP_MS", "150")
            .set("function.env", "RANDOM_SLEEP", "1")
    });
    let probe = CommittedProbe::new(&env, &job.group());
    let log = Path::new(&log).to_path_buf();
    let mut sluice = Sluice::run_with(&env, &job, "run", &["--node-instances", "8"]);
    let mut checks = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        sluice.assert_running();
        // Committed offsets first, then the log: a batch with no end line that started
        // before the offsets were read was unfinished when they were.
        let read_at = now_ns();
        let committed = probe.committed(&topic, 4);
        let logged = read_log(&log);
        let mut open: BTreeMap<(i32, i64), u128> = BTreeMap::new();
        for entry in &logged {
            if entry.start {
                open.insert((entry.partition, entry.first), entry.at_ns);
            } else {
                open.remove(&(entry.partition, entry.first));
            }
        }
        for (&(partition, first), &started) in &open {
            if started < read_at
                && let Some(&offset) = committed.get(&partition)
            {
                assert!(
                    offset <= first,
                    "partition {partition}: committed {offset} past the unfinished batch from offset {first}"
                );
                checks += 1;
            }
        }
        if ends.iter().all(|(p, end)| committed.get(p) == Some(end)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        checks > 0,
        "the commit check saw unfinished batches; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Batches of one partition did finish out of order (the case under test happened).
    let logged = read_log(&log);
    let mut out_of_order = 0;
    let mut ended: HashMap<i32, i64> = HashMap::new();
    for entry in logged.iter().filter(|e| !e.start) {
        let last = ended.entry(entry.partition).or_insert(-1);
        if entry.first < *last {
            out_of_order += 1;
        }
        *last = (*last).max(entry.first);
    }
    assert!(
        out_of_order > 0,
        "no batch finished before an earlier one of its partition"
    );

    // Every record once; per key, processing order is offset order.
    let mut rows = rows(&env, &job.prefix).await;
    assert_exactly_once(&rows, N);
    rows.sort_by_key(|r| (r.key.clone(), r.offset));
    for pair in rows.windows(2) {
        if pair[0].key == pair[1].key {
            assert_eq!(pair[0].partition, pair[1].partition);
            assert!(
                pair[0].processed_ns < pair[1].processed_ns,
                "key {} processed out of order at offsets {} and {}",
                pair[0].key,
                pair[0].offset,
                pair[1].offset
            );
        }
    }
    sluice.stop_cleanly(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_never_stops_an_instance_with_a_batch_in_flight() {
    let env = env();
    let topic = unique("drain");
    create_topic(&env, &topic, 2).await;
    // Record 0 makes its batch take 5 s; the rest are quick.
    let payloads = records(40, |i| format!("k{i}"));
    let ends = produce(&env, &topic, &payloads).await;
    let (job, _log) = sleepy_job(&env, &topic, |job| {
        job.set("scaling", "max_instances", 2_i64)
            .set("scaling", "idle_timeout", "1s")
            .set("batch", "max_records", 5_i64)
            .set("batch", "max_wait", "100ms")
            .set("function.env", "SLEEP_MS", "1")
            .set("function.env", "SLOW_ID", "0")
            .set("function.env", "SLOW_MS", "5000")
    });
    let mut sluice = Sluice::run_with(&env, &job, "run", &["--node-instances", "8"]);
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(60)).await;
    let logs = sluice.logs();
    let stopped_idle = logs.find("stopping idle function instance");
    let committed_slow = logs.rfind("committed");
    assert!(
        stopped_idle.is_some_and(|at| committed_slow.is_some_and(|c| at < c)),
        "an idle instance was stopped while the long batch ran; logs:\n{logs}"
    );
    assert!(
        !logs.contains("retrying"),
        "nothing was killed and retried; logs:\n{logs}"
    );
    assert!(
        !logs.contains("function instance failed"),
        "no instance failed; logs:\n{logs}"
    );
    assert_exactly_once(&rows(&env, &job.prefix).await, 40);
    sluice.stop_cleanly(Duration::from_secs(20));
}
