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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::amqp::{AmqpAdmin, close_connections_named};
use common::*;

const EVENTS: usize = 5_000;
/// Small enough that consumption takes several commits (the broker sends at most this
/// many messages before they are acknowledged), so the drop lands in the middle.
const PREFETCH: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_job_survives_a_dropped_connection_and_writes_every_event() {
    let env = env();
    let admin = AmqpAdmin::connect(&env).await;
    let queue = unique("clicks-amqp");
    let clicks = admin.queue_of_clicks(&queue, EVENTS).await;

    let job = JobDir::new_amqp(
        &env,
        &queue,
        &format!("prefetch = {PREFETCH}"),
        "command = [\"python3\", \"transform.py\"]\nmode = \"stream\"\ntimeout = \"30s\"",
        "",
    );
    let mut sluice = Sluice::run(&env, &job, "run");

    // In the middle: some messages acknowledged (gone from the queue), many still there.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        sluice.assert_running();
        let (ready, _) = admin.counts(&queue).await;
        if ready <= (EVENTS - 2 * PREFETCH) as u32 {
            assert!(
                ready >= PREFETCH as u32,
                "consumption went too fast to drop the connection in the middle ({ready} left)"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {ready} messages still ready; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connection = format!("sluice-{}", job.name);
    assert_eq!(
        close_connections_named(&connection).await,
        1,
        "the job's connection {connection}"
    );

    // Sluice reconnects and finishes: every event lands in the output.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        sluice.assert_running();
        let landed = count_ids(&read_rows(&env, &job.prefix).await).len();
        if landed == EVENTS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{landed} of {EVENTS} events in the output after 180 s; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for("the queue to drain", Duration::from_secs(30), async || {
        admin.counts(&queue).await == (0, 1)
    })
    .await;
    sluice.assert_running();
    sluice.stop_cleanly(Duration::from_secs(20));

    // Nothing was left unacknowledged: closing the connection would have requeued it.
    wait_for(
        "the job's consumer to go",
        Duration::from_secs(10),
        async || admin.counts(&queue).await.1 == 0,
    )
    .await;
    assert_eq!(
        admin.counts(&queue).await,
        (0, 0),
        "messages left in the queue"
    );

    let rows = read_rows(&env, &job.prefix).await;
    let counts = count_ids(&rows);
    assert_eq!(counts.len(), EVENTS, "every event id is in the output");
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (rows.len(), duplicated),
        (EVENTS, 0),
        "every event exactly once (redeliveries are recognised by message_id)"
    );
    let by_id: HashMap<_, _> = rows.iter().map(|row| (row.event_id.clone(), row)).collect();
    for click in &clicks {
        let row = by_id[&click.event_id];
        assert_eq!(
            row.domain,
            click.host.to_lowercase(),
            "domain of {}",
            click.event_id
        );
        assert_eq!(row.user_id, click.user_id);
        assert_eq!(
            row.partition_date, click.date,
            "partition of {}",
            click.event_id
        );
    }

    let logs = sluice.logs();
    assert!(
        logs.contains("amqp connection lost"),
        "the drop is logged; logs:\n{logs}"
    );
    assert!(
        logs.contains("amqp source reconnected"),
        "the reconnection is logged; logs:\n{logs}"
    );
    assert!(
        !logs.contains("do-not-leak"),
        "a platform secret reached the logs"
    );
    admin.delete_queue(&queue).await;
}
