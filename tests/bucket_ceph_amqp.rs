//! Real bucket notifications through a real broker: Ceph RADOS Gateway (started by
//! `scripts/ceph.sh`) publishes S3 event JSON to a RabbitMQ exchange (topic attribute
//! `push-endpoint=amqp://…`, `amqp-ack-level=broker`), and Sluice consumes the bound queue
//! (`[trigger.bucket.amqp]`). 50 objects whose keys hold spaces, unicode and `+` → each
//! object's records land exactly once; the same objects uploaded again (same versions,
//! fresh notifications) → nothing changes; a malformed message on the queue is reported
//! and stays on the queue.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::amqp::AmqpAdmin;
use common::ceph::{OBJECTS, PER_OBJECT, RGW_EXCHANGE, rgw, upload_clicks};
use common::notices::{
    assert_repeats_changed_nothing, wait_every_object_once, wait_repeats_and_malformed,
};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceph_notifications_on_amqp_process_each_object_once() {
    let env = env();
    let rgw = rgw();
    let base = unique("cephq").to_lowercase();
    let lake = format!("{base}/lake");
    let exchange = RGW_EXCHANGE;
    let queue = format!("{base}-notices");
    let admin = AmqpAdmin::connect(&env).await;
    // Ceph publishes to the exchange, which must exist before the first notification.
    admin.declare_exchange(exchange).await;

    let toml = rgw
        .clickstream_job(&base)
        .set("trigger.bucket.amqp", "url", &env.amqp_url)
        .set("trigger.bucket.amqp", "queue", &queue)
        .set("trigger.bucket.amqp", "declare", true)
        .set("trigger.bucket.amqp", "exchange", exchange)
        .set("trigger.bucket.amqp", "routing_keys", ["#"])
        .set("output", "max_file_age", "500ms");
    let job = JobDir::with_toml(&env.output_to(toml, &lake), &queue, &lake);
    let mut sluice = Sluice::run(&env, &job, "run");
    wait_for(
        "the notification queue's consumer",
        Duration::from_secs(30),
        async || {
            sluice.assert_running();
            sluice
                .logs()
                .contains("bucket source waiting for notifications")
        },
    )
    .await;
    // No password in the URL: over plain HTTP the gateway refuses one, and logs in as
    // guest when the URL names nobody.
    let topic = rgw.probe(&[
        "subscribe",
        "amqp://127.0.0.1:5672",
        &format!("{base}/"),
        &format!("amqp-exchange={exchange}"),
        "amqp-ack-level=broker",
    ]);

    let store = rgw.store();
    upload_clicks(&store, &base).await;
    wait_every_object_once(&env, &lake, &mut sluice, (OBJECTS, PER_OBJECT)).await;

    // The same objects again: Ceph publishes fresh notifications for the same versions.
    upload_clicks(&store, &base).await;
    // And one message that is no notification at all.
    admin
        .publish(&queue, &[("garbage-1".into(), "{\"Records\": [".into())])
        .await;
    let report = wait_repeats_and_malformed(&mut sluice, OBJECTS).await;
    assert!(
        report.contains(&queue) && report.contains("garbage-1") && report.contains("EOF"),
        "the report names the queue, the message and the reason: {report}"
    );
    rgw.probe(&["unsubscribe", &topic]);
    sluice.stop_cleanly(Duration::from_secs(10));
    assert_repeats_changed_nothing(&env, &lake, (OBJECTS, PER_OBJECT)).await;
    // Every notification was acknowledged except the malformed one, which the broker
    // keeps.
    let (ready, consumers) = admin.counts(&queue).await;
    assert_eq!((ready, consumers), (1, 0));
    admin.delete_queue(&queue).await;
}
