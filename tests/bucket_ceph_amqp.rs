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
use common::ceph::{RGW_EXCHANGE, rgw};
use common::notices::wait_repeats_and_malformed;
use common::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};

const OBJECTS: usize = 50;
const PER_OBJECT: usize = 10;

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

    let dir = tempfile::tempdir().unwrap();
    copy_example_function(dir.path());
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            r##"name = "{base}"
[trigger.bucket]
url = "s3://{rgw_bucket}/{base}"
mode = "notifications"
[trigger.bucket.amqp]
url = "{amqp_url}"
queue = "{queue}"
declare = true
exchange = "{exchange}"
routing_keys = ["#"]
[trigger.bucket.options]
endpoint = "{rgw_endpoint}"
region = "{rgw_region}"
[function]
command = ["python3", "transform.py"]
mode = "stream"
[batch]
max_wait = "200ms"
[output]
url = "s3://{bucket}/{lake}"
partition_by = ["event_date"]
max_file_age = "500ms"
schema = {{ event_id = "utf8 not null", user_id = "int64", action = "utf8", domain = "utf8", path = "utf8", ts = "timestamp_ms", event_date = "date32" }}
[output.options]
endpoint = "{endpoint}"
"##,
            rgw_bucket = rgw.bucket,
            rgw_endpoint = rgw.endpoint,
            rgw_region = rgw.region,
            amqp_url = env.amqp_url,
            bucket = env.bucket,
            endpoint = env.s3_endpoint,
        ),
    )
    .unwrap();
    let job = JobDir {
        dir,
        name: base.clone(),
        topic: queue.clone(),
        prefix: lake.clone(),
    };
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
    let upload = async |store: &object_store::aws::AmazonS3| {
        for n in 0..OBJECTS {
            let key = format!("{base}/día {n} + más.ndjson");
            let body: String = (n * PER_OBJECT..(n + 1) * PER_OBJECT)
                .map(|i| Click::numbered(i).json() + "\n")
                .collect();
            store
                .put(
                    &ObjectPath::parse(&key).unwrap(),
                    PutPayload::from(body.into_bytes()),
                )
                .await
                .unwrap();
        }
    };
    upload(&store).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while done_objects(&env, &lake).await != OBJECTS {
        sluice.assert_running();
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for every notified object; done {}; logs:\n{}",
            done_objects(&env, &lake).await,
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = read_rows(&env, &lake).await;
    assert_eq!(rows.len(), OBJECTS * PER_OBJECT, "{}", sluice.logs());
    assert!(count_ids(&rows).values().all(|&n| n == 1));

    // The same objects again: Ceph publishes fresh notifications for the same versions.
    upload(&store).await;
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
    let rows = read_rows(&env, &lake).await;
    assert_eq!(
        rows.len(),
        OBJECTS * PER_OBJECT,
        "no duplicate rows after repeated notifications"
    );
    assert_eq!(done_objects(&env, &lake).await, OBJECTS);
    // Every notification was acknowledged except the malformed one, which the broker
    // keeps.
    let (ready, consumers) = admin.counts(&queue).await;
    assert_eq!((ready, consumers), (1, 0));
    admin.delete_queue(&queue).await;
}
