//! The bucket trigger fed by notifications on a Kafka topic (`[trigger.bucket.kafka]`):
//! recorded AWS- and MinIO-shaped notification bodies for 50 objects on the S3 endpoint
//! (keys with spaces, unicode and `+`) are produced to a topic → exactly one output per
//! object; the same notifications produced again → outputs unchanged; a malformed
//! message is reported and the group's offset is not committed past it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::notices::{body, wait_repeats_and_malformed};
use common::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};

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
        let payload: String = (n * PER_OBJECT..(n + 1) * PER_OBJECT)
            .map(|i| Click::numbered(i).json() + "\n")
            .collect();
        let put = store
            .put(
                &ObjectPath::parse(&key).unwrap(),
                PutPayload::from(payload.into_bytes()),
            )
            .await
            .unwrap();
        let etag = put.e_tag.unwrap_or_default();
        bodies.push((
            format!("object-{n}"),
            body(&env.bucket, &key, etag.trim_matches('"'), n % 2 == 1),
        ));
    }

    let trigger = format!(
        r#"[trigger.bucket]
url = "s3://{bucket}/{inbox}"
mode = "notifications"
[trigger.bucket.kafka]
brokers = "{brokers}"
topic = "{topic}"
[trigger.bucket.kafka.options]
"session.timeout.ms" = "6000"
[trigger.bucket.options]
endpoint = "{endpoint}""#,
        bucket = env.bucket,
        brokers = env.brokers,
        endpoint = env.s3_endpoint,
    );
    let job = JobDir::with_trigger(
        &env,
        &trigger,
        &topic,
        "command = [\"python3\", \"transform.py\"]\nmode = \"stream\"",
        "",
    );
    let lake = job.prefix.clone();
    let ends = produce(&env, &topic, &bodies).await;
    assert_eq!(ends.get(&0), Some(&(OBJECTS as i64)));

    let mut sluice = Sluice::run(&env, &job, "run");
    wait_for("every object done", Duration::from_secs(120), async || {
        sluice.assert_running();
        done_objects(&env, &lake).await == OBJECTS
    })
    .await;
    let rows = read_rows(&env, &lake).await;
    assert_eq!(rows.len(), OBJECTS * PER_OBJECT, "{}", sluice.logs());
    assert!(count_ids(&rows).values().all(|&n| n == 1));
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
    let rows = read_rows(&env, &lake).await;
    assert_eq!(rows.len(), OBJECTS * PER_OBJECT, "no duplicate rows");
    assert_eq!(done_objects(&env, &lake).await, OBJECTS);
    assert_eq!(
        committed(&env, &job.group(), &topic, 1).get(&0),
        Some(&malformed_offset)
    );
}
