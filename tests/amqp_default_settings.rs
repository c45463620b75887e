//! End to end over real services, every setting at its default (`prefetch` 10,000,
//! `max_file_age` 30 s, `batch.max_records` 1,000): 50,000 queued messages are all
//! committed and acknowledged well before five file ages. The broker sends at most
//! `prefetch` unacknowledged messages; were acknowledgements to wait for the file age,
//! the job would move one window per 30 s (150 s for the queue).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::amqp::{AmqpAdmin, unacknowledged};
use common::*;

const EVENTS: usize = 50_000;
/// Far below the 150 s five file ages would take.
const BOUND: Duration = Duration::from_secs(75);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_larger_than_the_prefetch_is_acknowledged_before_the_file_age() {
    let env = env();
    let admin = AmqpAdmin::connect(&env).await;
    let queue = unique("defaults-amqp");
    admin.queue_of_clicks(&queue, EVENTS).await;

    let job = JobDir::new_amqp(&env, &queue, |job| {
        job.set("function", "command", ["python3", "transform.py"])
            .set("function", "mode", "stream")
    });
    // Back to the defaults: no batch settings, no file age.
    let path = job.path().join("job.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    let defaults = toml
        .replace("max_records = 1000\n", "")
        .replace("max_wait = \"500ms\"\n", "")
        .replace("max_file_age = \"1s\"\n", "");
    assert!(
        !defaults.contains("max_file_age") && !defaults.contains("prefetch"),
        "{defaults}"
    );
    std::fs::write(&path, defaults).unwrap();

    let started = Instant::now();
    let mut sluice = Sluice::run(&env, &job, "run");
    // Acknowledged means durable: the job acknowledges only committed output.
    loop {
        sluice.assert_running();
        let (ready, _) = admin.counts(&queue).await;
        if ready == 0 && unacknowledged(&queue).await == 0 {
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "{ready} messages still ready after {BOUND:?} (intake waits for the file age); logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let rows = read_rows(&env, &job.prefix).await;
    let counts = count_ids(&rows);
    assert_eq!(counts.len(), EVENTS, "every event id is in the output");
    assert_eq!(rows.len(), EVENTS, "every event once");
    let logs = sluice.logs();
    sluice.terminate();
    let status = sluice.wait(Duration::from_secs(30));
    assert!(status.success(), "exit {status}; logs:\n{logs}");
    admin.delete_queue(&queue).await;
}
