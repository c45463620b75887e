//! AMQP queues whose names look like something else: `/` is legal in a queue name, so a
//! queue may be called `orders/1` or `a/b/7` — which read, as text, like a Kafka
//! topic-partition. Such a job must still be an AMQP job from end to end.
//!
//! 20,000 persistent messages, each with a `message_id`, on a fresh queue of each name;
//! `sluice run` is killed with SIGKILL just after its first commit is durable (the first
//! message-id file appears), then run again to the end. Every message lands exactly once:
//! the second run's redeliveries are recognised by `message_id`, and its output never
//! overwrites the first run's. The output objects carry run-id names (no names derived
//! from positions of a parsed "partition"), and no Kafka commit marker is written.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::amqp::{AmqpAdmin, example_stream_job};
use common::*;
use futures::TryStreamExt as _;
use object_store::ObjectStore as _;
use object_store::path::Path as ObjectPath;

const MESSAGES: usize = 20_000;
/// Small, so consumption takes many commits and the kill lands in the middle.
const PREFETCH: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_named_like_a_partition_loses_nothing_across_a_kill() {
    every_message_once_across_a_kill("orders/1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_several_slashes_loses_nothing_across_a_kill() {
    every_message_once_across_a_kill("a/b/7").await;
}

/// Every object key under `prefix` (bookkeeping included).
async fn keys_under(env: &Env, prefix: &str) -> Vec<String> {
    s3(env)
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list output")
}

/// How many message-id files the job has written: one per durable commit.
async fn id_files(env: &Env, prefix: &str) -> usize {
    keys_under(env, &format!("{prefix}/_sluice/amqp-ids"))
        .await
        .len()
}

async fn every_message_once_across_a_kill(name: &str) {
    let env = env();
    let admin = AmqpAdmin::connect(&env).await;
    let queue = format!("{}/{name}", unique("sluice-it"));
    let clicks = admin.queue_of_clicks(&queue, MESSAGES).await;

    let job = example_stream_job(&env, &queue, PREFETCH);

    // First run: killed as soon as its first commit is durable (polled closely, so the
    // kill falls just after a commit rather than inside the next one's upload).
    let mut first = Sluice::run(&env, &job, "first");
    let deadline = Instant::now() + Duration::from_secs(120);
    while id_files(&env, &job.prefix).await == 0 {
        first.assert_running();
        assert!(
            Instant::now() < deadline,
            "no commit within 120 s; logs:\n{}",
            first.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = first.wait(Duration::from_secs(10));
    assert!(!status.success(), "the first run was killed: {status}");
    let first_logs = first.logs();
    let landed_before = count_ids(&read_rows(&env, &job.prefix).await).len();
    assert!(
        landed_before > 0 && landed_before < MESSAGES,
        "the kill must land in the middle: {landed_before} of {MESSAGES} landed before it"
    );

    // Second run: to the end — every message in the output (or the wait times out and
    // the final check says what is missing), the queue drained — then a graceful stop.
    let mut second = Sluice::run(&env, &job, "second");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        second.assert_running();
        let landed = count_ids(&read_rows(&env, &job.prefix).await).len();
        if landed == MESSAGES || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    admin.drain_then_stop(&queue, &mut second).await;

    let rows = read_rows(&env, &job.prefix).await;
    let counts = count_ids(&rows);
    let missing = clicks
        .iter()
        .filter(|click| !counts.contains_key(&click.event_id))
        .count();
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (missing, duplicated, rows.len()),
        (0, 0, MESSAGES),
        "every message exactly once (missing, duplicated, rows); first run:\n{first_logs}\nsecond run:\n{}",
        second.logs()
    );

    // AMQP all the way: objects named by run, no Kafka markers.
    let keys = keys_under(&env, &job.prefix).await;
    let bookkeeping = format!("{}/_sluice/", job.prefix);
    for key in keys.iter().filter(|key| !key.starts_with(&bookkeeping)) {
        let file = key.rsplit('/').next().unwrap();
        assert!(
            file.starts_with("part-") && !key.contains("amqp:"),
            "output object {key} is not named as an AMQP job's object"
        );
    }
    let kafka_markers: Vec<_> = keys
        .iter()
        .filter(|key| key.starts_with(&format!("{bookkeeping}kafka")))
        .collect();
    assert!(
        kafka_markers.is_empty(),
        "an AMQP job wrote Kafka commit markers: {kafka_markers:?}"
    );
    admin.delete_queue(&queue).await;
}
