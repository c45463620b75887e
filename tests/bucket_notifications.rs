//! The bucket trigger in notification mode against the S3 endpoint: 50 objects (keys with
//! spaces, unicode and `+`) announced by AWS- and MinIO-shaped notification bodies POSTed
//! to Sluice's endpoint → exactly one output per object; the same notifications delivered
//! again → outputs unchanged. (Ceph RGW pushing real notifications is tested separately.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::notices::{body, post, put_clicks, wait_every_object_once, wait_listening};
use common::*;
use object_store::ObjectStore as _;
use object_store::path::Path as ObjectPath;

const OBJECTS: usize = 50;
const PER_OBJECT: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_objects_land_once_and_repeats_change_nothing() {
    let env = env();
    let store = s3(&env);
    let base = unique("notify").to_lowercase();
    let inbox = format!("{base}/inbox");
    let lake = format!("{base}/lake");
    let address = format!("127.0.0.1:{}", free_port());

    let toml = JobToml::clickstream(&unique("notify").to_lowercase())
        .bucket(&format!("s3://{}/{inbox}", env.bucket))
        .set("trigger.bucket", "mode", "notifications")
        .set("trigger.bucket", "listen", &address)
        .set("trigger.bucket.options", "endpoint", &env.s3_endpoint)
        .set("batch", "max_wait", "200ms")
        .set("output", "max_file_age", "500ms");
    let job = JobDir::with_toml(&env.output_to(toml, &lake), "", &lake);

    // Upload the objects first, as a bucket would before notifying.
    let mut bodies = Vec::new();
    for n in 0..OBJECTS {
        let key = format!("{inbox}/día {n} + more.ndjson");
        let etag = put_clicks(store.as_ref(), &key, n, PER_OBJECT).await;
        bodies.push(body(&env.bucket, &key, &etag, n % 2 == 1));
    }

    let mut sluice = Sluice::run(&env, &job, "run");
    wait_listening(&mut sluice, &address).await;
    assert_eq!(
        post(&address, "{\"Records\": [oops").await,
        400,
        "malformed JSON refused"
    );
    for body in &bodies {
        assert_eq!(post(&address, body).await, 200);
    }
    wait_every_object_once(&env, &lake, &mut sluice, (OBJECTS, PER_OBJECT)).await;
    let rows = read_rows(&env, &lake).await;
    let objects_before: usize = rows
        .iter()
        .map(|r| r.object.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();

    // A done object's notification leaves the spool, or it would be read again.
    let spool = ObjectPath::from(format!("{lake}/_sluice/bucket/notices"));
    let spool_empty = async || {
        use futures::TryStreamExt as _;
        let left: Vec<_> = store.list(Some(&spool)).try_collect().await.unwrap();
        left.is_empty()
    };
    wait_for(
        "done objects to leave the spool",
        Duration::from_secs(30),
        spool_empty,
    )
    .await;

    // The same notifications again: accepted, recognised as done, nothing rewritten.
    for body in &bodies {
        assert_eq!(post(&address, body).await, 200);
    }
    wait_for(
        "repeats to be dropped",
        Duration::from_secs(60),
        spool_empty,
    )
    .await;
    sluice.stop_cleanly(Duration::from_secs(10));
    let rows = read_rows(&env, &lake).await;
    assert_eq!(
        rows.len(),
        OBJECTS * PER_OBJECT,
        "no duplicate rows after repeats"
    );
    let objects_after: usize = rows
        .iter()
        .map(|r| r.object.clone())
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(objects_before, objects_after, "outputs unchanged");
    assert!(
        sluice
            .logs()
            .contains("rejected a malformed bucket notification"),
        "{}",
        sluice.logs()
    );
}
