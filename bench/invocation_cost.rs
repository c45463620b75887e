//! What invocation records cost the data path: one job run in process over an in-memory
//! source (4 partitions) with the identity function in stream mode and Parquet to a local
//! folder, without an observer (as `sluice run`) and with the one `sluice serve` gives
//! (each batch attempt queued to the recorder, which writes them to a SQLite registry in
//! batches), alternately, several times.
//!
//! ```sh
//! cargo run --release --example invocation_cost -- [EVENTS] [RECORDS_PER_BATCH] [ROUNDS]
//! ```
//!
//! Small batches are the recorder's worst case (the most attempts per event). The two
//! kinds of run alternate, in both orders. Prints
//! events/s per run, the median of each, the difference, and how many records were
//! written and dropped.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use sluice_connectors::{Event, Origin, VecSource};
use sluice_platform::control::invocations::{
    InvocationRecorder, InvocationRetention, VersionObserver,
};
use sluice_platform::control::logs::FunctionLogs;
use sluice_platform::control::registry::Registry;
use sluice_platform::pipeline::{AttemptOutcome, BatchAttempt, BatchObserver, Job, JobRuntime};
use sluice_platform::spec::load_job;
use tokio_util::sync::CancellationToken;

const JOB: &str = "invocation-cost";
/// Keeps every record of the bench (retention applies to every job), so they can be counted.
const KEEP_ALL: InvocationRetention = InvocationRetention {
    max_age: std::time::Duration::from_secs(7 * 24 * 3600),
    max_per_job: i64::MAX,
};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(400_000, |a| a.parse().unwrap());
    let per_batch: usize = args.next().map_or(500, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let work = tempfile::tempdir().unwrap();
    let registry_url = format!("sqlite://{}", work.path().join("registry.db").display());
    let registry = Registry::open(&registry_url).await.unwrap();

    let mut without = Vec::new();
    let mut with = Vec::new();
    let (mut written, mut dropped) = (0, 0);
    for round in 0..rounds {
        // Each order half the time: the first run of a pair tends to pay for the one before.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for observed in order {
            let dir = tempfile::tempdir_in(work.path()).unwrap();
            let spec = job(dir.path(), per_batch);
            let source = Box::new(VecSource::new(payloads(events), 10_000));
            let mut runtime = JobRuntime::for_job(&spec);
            let stop = CancellationToken::new();
            let mut writer = None;
            if observed {
                let (recorder, task) =
                    InvocationRecorder::spawn(registry.clone(), KEEP_ALL, stop.clone());
                let logs = FunctionLogs::default();
                runtime.observer = Some(Arc::new(VersionObserver {
                    job: JOB.to_owned(),
                    version: round as i64 + 1,
                    recorder: recorder.clone(),
                    log: logs.job(JOB),
                }));
                writer = Some((recorder, task));
            }
            let started = Instant::now();
            let stats = Job::over(&spec, source, runtime)
                .await
                .unwrap()
                .run(CancellationToken::new())
                .await
                .unwrap();
            let rate = events as f64 / started.elapsed().as_secs_f64();
            assert_eq!(stats.rows_out, events as u64);
            if let Some((recorder, task)) = writer {
                stop.cancel();
                task.await.unwrap();
                dropped += recorder.dropped();
            }
            println!(
                "round {round} {:<16} {rate:>9.0} events/s ({} batches)",
                if observed {
                    "with records"
                } else {
                    "without records"
                },
                stats.batches
            );
            if observed {
                with.push(rate);
            } else {
                without.push(rate);
            }
        }
    }
    let (per_attempt, flood_dropped) = observer_cost(&registry).await;
    for row in registry.invocations(JOB, 1_000_000).await.unwrap() {
        written += row.records_in;
    }
    let (without, with) = (median(&mut without), median(&mut with));
    println!(
        "events: {events} per run, {per_batch} records per batch, {rounds} rounds, identity function (stream)"
    );
    println!("median without records: {without:.0} events/s");
    println!("median with records:    {with:.0} events/s");
    println!(
        "difference:             {:+.1} %",
        (with - without) / without * 100.0
    );
    println!("records in, over the invocation records written: {written}; dropped: {dropped}");
    println!(
        "observer call on the batch's task: {per_attempt:.2} µs per attempt ({:.3} µs per event at {per_batch} records per batch; {flood_dropped} of 100000 dropped in this flood)",
        per_attempt / per_batch as f64
    );
}

/// Microseconds one attempt costs the batch task that reports it: building the record and
/// queueing it (the writer drains the queue meanwhile, as in a run).
async fn observer_cost(registry: &Registry) -> (f64, u64) {
    const CALLS: u32 = 100_000;
    let stop = CancellationToken::new();
    let (recorder, task) = InvocationRecorder::spawn(registry.clone(), KEEP_ALL, stop.clone());
    let logs = FunctionLogs::default();
    let observer = VersionObserver {
        job: "observer-cost".to_owned(),
        version: 1,
        recorder: recorder.clone(),
        log: logs.job("observer-cost"),
    };
    let attempt = BatchAttempt {
        id: String::new(),
        instance: Some("observer-cost-1".to_owned()),
        started: std::time::SystemTime::now(),
        duration: std::time::Duration::from_millis(3),
        cold_start: false,
        init_time: None,
        split: "t/0".to_owned(),
        first_position: 0,
        last_position: 499,
        records_in: 500,
        rows_out: 500,
        rejected: 0,
        dead_letters: 0,
        outcome: AttemptOutcome::Ok,
        stderr_tail: String::new(),
    };
    let started = Instant::now();
    for call in 0..CALLS {
        let mut attempt = attempt.clone();
        attempt.id = format!("cost-{call}");
        observer.attempt(attempt);
        if call % 1_000 == 0 {
            // Let the writer run, as the runtime's other tasks do in a real run.
            tokio::task::yield_now().await;
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    task.await.unwrap();
    (
        elapsed.as_secs_f64() * 1e6 / f64::from(CALLS),
        recorder.dropped(),
    )
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn job(dir: &std::path::Path, per_batch: usize) -> sluice_platform::spec::JobSpec {
    let toml = format!(
        r#"name = "{JOB}"
[trigger.kafka]
brokers = "127.0.0.1:1"
topic = "t"
[function]
command = ["cat"]
mode = "stream"
[batch]
max_records = {per_batch}
[output]
url = "out"
schema = {{ id = "int64 not null", user = "utf8", action = "utf8" }}
"#
    );
    std::fs::write(dir.join("job.toml"), toml).unwrap();
    load_job(dir).unwrap()
}

fn payloads(count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            Event::from_payload(
                format!(r#"{{"id":{i},"user":"user-{}","action":"click"}}"#, i % 977),
                Origin::Kafka {
                    topic: Arc::from("t"),
                    partition: (i % 4) as i32,
                    offset: (i / 4) as i64,
                },
            )
        })
        .collect()
}
