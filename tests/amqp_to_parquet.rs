//! End to end over real services: 5,000 click events on a fresh RabbitMQ queue → the
//! example job (stream mode) → Parquet on the S3 endpoint, with the job's connection
//! dropped by the broker in the middle of consumption.
//!
//! Every event lands exactly once: the producer sets `message_id`, so the deliveries the
//! broker redelivers after the drop (unacknowledged, their output possibly committed) are
//! recognised and acknowledged without running again. Sluice reconnects on its own and
//! keeps running; once it has stopped, the queue holds nothing — nothing was left
//! unacknowledged.

#![allow(clippy::unwrap_used)]

mod common;

use common::amqp::{MidConsumption, close_connections_named};

const EVENTS: usize = 5_000;
/// Small enough that consumption takes several commits (the broker sends at most this
/// many messages before they are acknowledged), so the drop lands in the middle.
const PREFETCH: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_job_survives_a_dropped_connection_and_writes_every_event() {
    // In the middle: some messages acknowledged (gone from the queue), many still there.
    let MidConsumption {
        admin,
        queue,
        clicks,
        job,
        mut sluice,
        ..
    } = MidConsumption::start("clicks-amqp", EVENTS, PREFETCH).await;
    let connection = format!("sluice-{}", job.name);
    assert_eq!(
        close_connections_named(&connection).await,
        1,
        "the job's connection {connection}"
    );

    // Sluice reconnects and finishes: every event lands in the output.
    admin
        .finish_after_reconnection(&queue, &job, &mut sluice, &clicks)
        .await;
    let logs = sluice.logs();
    assert!(
        !logs.contains("do-not-leak"),
        "a platform secret reached the logs"
    );
    admin.delete_queue(&queue).await;
}
