//! Real bucket notifications from a real S3 server: Ceph RADOS Gateway (started by
//! `scripts/ceph.sh`) pushes S3 event JSON to Sluice's notification endpoint. 50 objects
//! whose keys hold spaces, unicode and `+` → each object's records land exactly once;
//! the same objects uploaded again (same content, so the same version etag, with fresh
//! notifications) → nothing changes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ceph::{OBJECTS, PER_OBJECT, rgw, upload_clicks};
use common::notices::{assert_repeats_changed_nothing, wait_every_object_once, wait_listening};
use common::*;

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
    let toml = rgw
        .clickstream_job(&base)
        .set("trigger.bucket", "listen", format!("127.0.0.1:{port}"))
        .set("output", "max_file_age", "500ms");
    let job = JobDir::with_toml(&env.output_to(toml, &lake), "", &lake);
    let mut sluice = Sluice::run(&env, &job, "run");
    let address = format!("127.0.0.1:{port}");
    wait_listening(&mut sluice, &address).await;
    let topic = rgw.probe(&[
        "subscribe",
        &format!("http://{address}/"),
        &format!("{base}/"),
    ]);

    let store = rgw.store();
    upload_clicks(&store, &base).await;
    wait_every_object_once(&env, &lake, &mut sluice, (OBJECTS, PER_OBJECT)).await;

    // The same objects again: Ceph sends fresh notifications for the same versions.
    let notified = sluice
        .logs()
        .matches("listening for bucket notifications")
        .count();
    upload_clicks(&store, &base).await;
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
    assert_repeats_changed_nothing(&env, &lake, (OBJECTS, PER_OBJECT)).await;
}
