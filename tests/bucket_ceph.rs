//! Real bucket notifications from a real S3 server: Ceph RADOS Gateway (started by
//! `scripts/ceph.sh`) pushes S3 event JSON to Sluice's notification endpoint. 50 objects
//! whose keys hold spaces, unicode and `+` → each object's records land exactly once;
//! the same objects uploaded again (same content, so the same version etag, with fresh
//! notifications) → nothing changes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ceph::rgw;
use common::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};

const OBJECTS: usize = 50;
const PER_OBJECT: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceph_notifications_process_each_object_once_and_repeats_change_nothing() {
    let env = env();
    let rgw = rgw();
    assert_eq!(
        rgw.access_key, env.access_key,
        "the job uses one set of credentials for both stores"
    );
    let base = unique("ceph").to_lowercase();
    let port = free_port();
    let lake = format!("{base}/lake");
    let toml = JobToml::clickstream(&base)
        .bucket(&format!("s3://{}/{base}", rgw.bucket))
        .set("trigger.bucket", "mode", "notifications")
        .set("trigger.bucket", "listen", format!("127.0.0.1:{port}"))
        .set("trigger.bucket.options", "endpoint", &rgw.endpoint)
        .set("trigger.bucket.options", "region", &rgw.region)
        .set("batch", "max_wait", "200ms")
        .set("output", "max_file_age", "500ms");
    let job = JobDir::with_toml(&env.output_to(toml, &lake), "", &lake);
    let mut sluice = Sluice::run(&env, &job, "run");
    let address = format!("127.0.0.1:{port}");
    wait_for(
        "the notification endpoint",
        Duration::from_secs(30),
        async || {
            sluice.assert_running();
            tokio::net::TcpStream::connect(&address).await.is_ok()
        },
    )
    .await;
    let topic = rgw.probe(&[
        "subscribe",
        &format!("http://{address}/"),
        &format!("{base}/"),
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

    let done = async || done_objects(&env, &lake).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while done().await != OBJECTS {
        sluice.assert_running();
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for every notified object; done {}; logs:\n{}",
            done().await,
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = read_rows(&env, &lake).await;
    assert_eq!(rows.len(), OBJECTS * PER_OBJECT, "{}", sluice.logs());
    assert!(count_ids(&rows).values().all(|&n| n == 1));

    // The same objects again: Ceph sends fresh notifications for the same versions.
    let notified = sluice
        .logs()
        .matches("listening for bucket notifications")
        .count();
    upload(&store).await;
    wait_for(
        "the repeated notifications",
        Duration::from_secs(60),
        async || {
            sluice.assert_running();
            sluice
                .logs()
                .matches("repeated notification for an object already done")
                .count()
                >= OBJECTS
        },
    )
    .await;
    rgw.probe(&["unsubscribe", &topic]);
    sluice.stop_cleanly(Duration::from_secs(10));
    assert_eq!(notified, 1);
    let rows = read_rows(&env, &lake).await;
    assert_eq!(
        rows.len(),
        OBJECTS * PER_OBJECT,
        "no duplicate rows after repeated notifications"
    );
    assert_eq!(done().await, OBJECTS);
}
