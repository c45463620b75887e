//! Exactly-once per object version under `kill -9`: a bucket job (listing the S3
//! endpoint) reads large objects whose output is committed in several line ranges;
//! `sluice run` is killed with SIGKILL while an object is half written, several times,
//! then runs to the end. Every line lands exactly once: committed ranges are skipped
//! when the object is read again, and an unfinished range is written again by recovery
//! with the same boundaries (so the same names).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::notices::put_clicks;
use common::*;
use futures::TryStreamExt as _;
use object_store::ObjectStore as _;
use object_store::path::Path as ObjectPath;

const OBJECTS: usize = 3;
const PER_OBJECT: usize = 40_000;
const KILLS: usize = 3;

/// Lines committed so far: per object, the end of its latest commit marker
/// (`_sluice/objects/<object id>/<first>-<last>.commit.json`). Older markers are pruned
/// as ranges commit, so counting markers says nothing about progress.
async fn committed_lines(env: &Env, lake: &str) -> u64 {
    let markers: Vec<String> = s3(env)
        .list(Some(&ObjectPath::from(format!("{lake}/_sluice/objects"))))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let mut last_per_object = std::collections::HashMap::<String, u64>::new();
    for marker in markers {
        let Some((object, file)) = marker.rsplit_once('/') else {
            continue;
        };
        let Some(range) = file.strip_suffix(".commit.json") else {
            continue;
        };
        let last: u64 = range.split('-').nth(1).unwrap().parse().unwrap();
        let entry = last_per_object.entry(object.to_owned()).or_default();
        *entry = (*entry).max(last);
    }
    last_per_object.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_object_still_writes_every_line_exactly_once() {
    let env = env();
    let store = s3(&env);
    let base = unique("objkill").to_lowercase();
    let inbox = format!("{base}/inbox");
    for n in 0..OBJECTS {
        put_clicks(
            store.as_ref(),
            &format!("{inbox}/part {n}.ndjson"),
            n,
            PER_OBJECT,
        )
        .await;
    }
    let lake = format!("{base}/clicks");
    let toml = JobToml::clickstream(&base)
        .bucket(&format!("s3://{}/{inbox}", env.bucket))
        .set("trigger.bucket", "poll_interval", "200ms")
        .set("trigger.bucket.options", "endpoint", &env.s3_endpoint)
        .set("batch", "max_records", 1000_usize)
        .set("batch", "max_wait", "500ms")
        // Commit often, so every object is written in many ranges.
        .set("output", "max_file_age", "300ms");
    let job = JobDir::with_toml(&env.output_to(toml, &lake), &inbox, &lake);

    let mut seen = 0;
    for kill in 0..KILLS {
        let mut sluice = Sluice::run(&env, &job, &format!("kill-{kill}"));
        // Kill once this run has committed a range: it is then reading and writing the
        // next ones.
        wait_for(
            &format!("run {kill} to commit a range"),
            Duration::from_secs(60),
            async || {
                sluice.assert_running();
                committed_lines(&env, &lake).await > seen
            },
        )
        .await;
        sluice.child.kill().unwrap(); // SIGKILL
        let _ = sluice.child.wait();
        seen = committed_lines(&env, &lake).await;
        let rows = read_rows(&env, &lake).await;
        assert!(
            count_ids(&rows).values().all(|&n| n == 1),
            "kill {kill}: duplicate rows are visible"
        );
        assert!(
            rows.len() < OBJECTS * PER_OBJECT,
            "kill {kill} came after everything was written; make the objects larger"
        );
    }

    let mut sluice = Sluice::run(&env, &job, "final");
    wait_for("every object done", Duration::from_secs(180), async || {
        sluice.assert_running();
        done_objects(&env, &lake).await == OBJECTS
    })
    .await;
    sluice.stop_cleanly(Duration::from_secs(10));
    let rows = read_rows(&env, &lake).await;
    let ids = count_ids(&rows);
    assert_eq!(ids.len(), OBJECTS * PER_OBJECT, "every line written");
    assert!(
        ids.values().all(|&n| n == 1),
        "every line exactly once: {:?}",
        ids.iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    // Output names come from the object versions and line ranges.
    assert!(
        rows.iter().all(|row| row.object.contains("/object-")),
        "{:?}",
        rows.iter()
            .map(|r| &r.object)
            .find(|o| !o.contains("/object-"))
    );
}
