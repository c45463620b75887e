//! The bucket trigger in listing mode, over a local folder and over the S3 endpoint: objects
//! arrive in two waves with a restart between them; every object is processed exactly
//! once, and a broken row is dead-lettered without stopping the job.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};

/// A job folder whose trigger lists `input_url` and whose output goes to `output_url`;
/// `endpoint`, when given, is the S3 endpoint of both.
fn bucket_job(input_url: &str, output_url: &str, endpoint: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_example_function(dir.path());
    let mut toml = JobToml::clickstream(&unique("bucket").to_lowercase())
        .bucket(input_url)
        .set("batch", "max_wait", "200ms")
        .output(output_url)
        .set("output", "max_file_age", "1s");
    if let Some(endpoint) = endpoint {
        toml = toml
            .set("trigger.bucket.options", "endpoint", endpoint)
            .set("output.options", "endpoint", endpoint);
    }
    toml.write_in(dir.path());
    dir
}

fn run_once(env: &Env, job: &std::path::Path) -> Output {
    sluice_ok(env, &["run", "--once"], job)
}

/// Object `n` of a wave: NDJSON, CSV or gzip'd NDJSON, 50 clicks each.
fn object(n: usize) -> (String, Vec<u8>) {
    let clicks: Vec<Click> = (n * 50..(n + 1) * 50).map(Click::numbered).collect();
    match n % 3 {
        0 => {
            let body: String = clicks.iter().map(|c| c.json() + "\n").collect();
            (format!("in {n} + más.ndjson"), body.into_bytes())
        }
        1 => {
            let mut body = String::from("event_id,user_id,url,ts,action\n");
            for c in &clicks {
                let json: serde_json::Value = serde_json::from_str(&c.json()).unwrap();
                body += &format!(
                    "{},{},{},{},click\n",
                    c.event_id,
                    c.user_id,
                    json["url"].as_str().unwrap(),
                    c.ts
                );
            }
            (format!("batch-{n}.csv"), body.into_bytes())
        }
        _ => {
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for c in &clicks {
                writeln!(gz, "{}", c.json()).unwrap();
            }
            (format!("deep/{n}.ndjson.gz"), gz.finish().unwrap())
        }
    }
}

fn assert_each_once(rows: &[OutputRow], objects: usize) {
    let counts = count_ids(rows);
    assert_eq!(counts.len(), objects * 50, "distinct ids");
    assert!(
        counts.values().all(|&n| n == 1),
        "an object was processed twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_a_local_folder_processes_each_object_once_across_restarts() {
    let env = env();
    let root = tempfile::tempdir().unwrap();
    let inbox = root.path().join("inbox");
    let lake = root.path().join("lake");
    std::fs::create_dir_all(inbox.join("deep")).unwrap();
    let job = bucket_job(
        &format!("file://{}", inbox.display()),
        &format!("file://{}", lake.display()),
        None,
    );
    for n in 0..6 {
        let (key, body) = object(n);
        std::fs::write(inbox.join(key), body).unwrap();
    }
    std::fs::write(inbox.join("ragged.csv"), "event_id,user_id\nx-1,1\nx-2\n").unwrap();
    let first = run_once(&env, job.path());
    let logs = String::from_utf8_lossy(&first.stderr).into_owned();
    // The ragged row is dead-lettered with its key, line and reason; the job goes on.
    assert!(
        logs.contains("record cannot be read") && logs.contains("ragged.csv"),
        "{logs}"
    );
    assert!(logs.contains("line: 3"), "names the line: {logs}");
    assert!(
        logs.contains("row has 1 fields but the header has 2"),
        "{logs}"
    );

    for n in 6..12 {
        let (key, body) = object(n);
        std::fs::write(inbox.join(key), body).unwrap();
    }
    run_once(&env, job.path());

    let rows = read_local_rows(&lake);
    // x-1 (before the ragged row) has no ts, so the function dead-letters it.
    assert_each_once(&rows, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_the_s3_endpoint_processes_each_object_once_across_restarts() {
    let env = env();
    let store = s3(&env);
    let base = unique("bucket-e2e").to_lowercase();
    let job = bucket_job(
        &format!("s3://{}/{base}/inbox", env.bucket),
        &format!("s3://{}/{base}/lake", env.bucket),
        Some(&env.s3_endpoint),
    );
    for wave in [0..5, 5..10] {
        for n in wave {
            let (key, body) = object(n);
            store
                .put(
                    &ObjectPath::from(format!("{base}/inbox/{key}")),
                    PutPayload::from(body),
                )
                .await
                .unwrap();
        }
        run_once(&env, job.path());
    }
    let rows = read_rows(&env, &format!("{base}/lake")).await;
    assert_each_once(&rows, 10);
}

/// Rows of every Parquet file under a local lake folder.
fn read_local_rows(lake: &std::path::Path) -> Vec<OutputRow> {
    let mut rows = Vec::new();
    let mut stack = vec![lake.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("_sluice") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
                rows.extend(rows_of_parquet(&path.to_string_lossy(), bytes));
            }
        }
    }
    rows
}
