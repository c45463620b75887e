//! The bucket trigger fed by notifications on a Kafka topic (`[trigger.bucket.kafka]`):
//! recorded AWS- and MinIO-shaped notification bodies for 50 objects on the S3 endpoint
//! (keys with spaces, unicode and `+`) are produced to a topic → exactly one output per
//! object; the same notifications produced again → outputs unchanged; a malformed
//! message is reported and the group's offset is not committed past it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::notices::{
    assert_repeats_changed_nothing, body, put_clicks, wait_every_object_once,
    wait_repeats_and_malformed,
};
use common::*;

const OBJECTS: usize = 50;
const PER_OBJECT: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_on_a_kafka_topic_process_each_object_once() {
    let env = env();
    let store = s3(&env);
    let base = unique("kfnotify").to_lowercase();
    let inbox = format!("{base}/inbox");
    let topic = format!("{base}-notices");
    create_topic(&env, &topic, 1).await;

    let mut bodies = Vec::new();
    for n in 0..OBJECTS {
        let key = format!("{inbox}/día {n} + more.ndjson");
        let etag = put_clicks(store.as_ref(), &key, n, PER_OBJECT).await;
        bodies.push((
            format!("object-{n}"),
            body(&env.bucket, &key, &etag, n % 2 == 1),
        ));
    }

    let lake = format!("{base}/lake");
    let toml = JobToml::clickstream(&base)
        .bucket(&format!("s3://{}/{inbox}", env.bucket))
        .set("trigger.bucket", "mode", "notifications")
        .set("trigger.bucket.kafka", "brokers", &env.brokers)
        .set("trigger.bucket.kafka", "topic", &topic)
        .set(
            "trigger.bucket.kafka.options",
            "\"session.timeout.ms\"",
            "6000",
        )
        .set("trigger.bucket.options", "endpoint", &env.s3_endpoint)
        .set("batch", "max_wait", "500ms")
        .set("output", "max_file_age", "1s");
    let job = JobDir::with_toml(&env.output_to(toml, &lake), &topic, &lake);
    let ends = produce(&env, &topic, &bodies).await;
    assert_eq!(ends.get(&0), Some(&(OBJECTS as i64)));

    let mut sluice = Sluice::run(&env, &job, "run");
    wait_every_object_once(&env, &lake, &mut sluice, (OBJECTS, PER_OBJECT)).await;
    wait_for(
        "the notifications' offsets committed",
        Duration::from_secs(30),
        async || committed(&env, &job.group(), &topic, 1).get(&0) == Some(&(OBJECTS as i64)),
    )
    .await;

    // The same notifications again, then one message that is no notification.
    let mut again = bodies.clone();
    again.push(("garbage".into(), "{\"Records\": [".into()));
    let ends = produce(&env, &topic, &again).await;
    let malformed_offset = ends[&0] - 1;
    let report = wait_repeats_and_malformed(&mut sluice, OBJECTS).await;
    assert!(
        report.contains(&topic)
            && report.contains(&format!("\"offset\":{malformed_offset}"))
            && report.contains("EOF"),
        "the report names the topic, the offset and the reason: {report}"
    );
    // Everything before the malformed message is committed, and nothing past it.
    wait_for(
        "the repeats' offsets committed",
        Duration::from_secs(30),
        async || committed(&env, &job.group(), &topic, 1).get(&0) == Some(&malformed_offset),
    )
    .await;
    sluice.stop_cleanly(Duration::from_secs(10));
    assert_repeats_changed_nothing(&env, &lake, (OBJECTS, PER_OBJECT)).await;
    assert_eq!(
        committed(&env, &job.group(), &topic, 1).get(&0),
        Some(&malformed_offset)
    );
}
