//! Notifications for objects that never appear: one POST of 100 bogus keys to a job
//! reading a local bucket, through the real `sluice run`. Volume is the connector's own
//! test's (it drains 10,000 from one 1.6 MB POST): through `sluice run` each given-up
//! notice takes about 40 ms here, so this test keeps the count small. Each notice is
//! given up after `missing_timeout` as one dead letter, and the spool drains — nothing is
//! retried forever. Keys listing skips (`_` or `.` segments) are dropped, and the one
//! real object is processed.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::notices::{post, wait_listening};
use common::*;

const BOGUS: usize = 100;

fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_of_missing_objects_are_dead_lettered_and_the_spool_drains() {
    let root = tempfile::tempdir().unwrap();
    let inbox = root.path().join("inbox");
    let lake = root.path().join("lake");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("real.ndjson"), "{\"n\":1}\n").unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let job = tempfile::tempdir().unwrap();
    JobToml::new(&unique("missing").to_lowercase())
        .bucket(&format!("file://{}", inbox.display()))
        .set("trigger.bucket", "mode", "notifications")
        .set("trigger.bucket", "listen", &address)
        .set("trigger.bucket", "missing_timeout", "1s")
        .set("function", "command", ["cat"])
        .set("function", "mode", "stream")
        .set("batch", "max_wait", "100ms")
        .output(&format!("file://{}", lake.display()))
        .set("output", "max_file_age", "200ms")
        .schema(r#"{ n = "int64" }"#)
        .write_in(job.path());
    let log = job.path().join("sluice.log");
    let mut sluice = Sluice::spawn(&env(), &["run", job.path().to_str().unwrap()], &[], log);
    wait_listening(&mut sluice, &address).await;

    let record = |key: &str| {
        format!(
            r#"{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"landing"}},"object":{{"key":"{key}","size":1,"eTag":"0123456789abcdef0123456789abcdef","sequencer":"0A"}}}}}}"#
        )
    };
    let mut records: Vec<String> = (0..BOGUS)
        .map(|i| record(&format!("bogus/day-{i:05}/events.ndjson")))
        .collect();
    records.push(record("real.ndjson"));
    records.push(record("_tmp/x.ndjson"));
    records.push(record("in/.part.ndjson"));
    let body = format!(r#"{{"Records":[{}]}}"#, records.join(","));
    let started = std::time::Instant::now();
    assert_eq!(post(&address, &body).await, 200);

    let spool = lake.join("_sluice/bucket/notices");
    let dead = lake.join("_sluice/dead_letters");
    let letters = || -> Vec<serde_json::Value> {
        files_in(&dead)
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_for(
        "every bogus notice dead-lettered and the spool empty",
        Duration::from_secs(120),
        async || {
            sluice.assert_running();
            files_in(&spool).is_empty() && letters().len() >= BOGUS
        },
    )
    .await;
    let drained_in = started.elapsed();
    sluice.stop_cleanly(Duration::from_secs(60));

    let letters = letters();
    let keys: BTreeSet<String> = letters
        .iter()
        .map(|l| l["origin"]["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(letters.len(), BOGUS, "one letter per bogus key");
    assert_eq!(keys.len(), BOGUS);
    assert!(keys.iter().all(|k| k.starts_with("bogus/")), "{keys:?}");
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.contains("still missing"), "{error}");
    assert!(
        letters[0]["payload"].as_str().unwrap().contains("bogus/"),
        "the notification is kept as the payload"
    );
    // The real object was processed; its output exists.
    let outputs = files_in(&lake)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(outputs, 1, "{}", sluice.logs());
    eprintln!("{BOGUS} bogus notices drained in {drained_in:?}");
}
