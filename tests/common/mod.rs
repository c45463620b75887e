//! Shared fixtures for the end-to-end tests: the real Kafka-protocol broker and S3
//! endpoint (started by `scripts/test.sh`, or whatever the environment points at), job
//! folders, and the `sluice` binary as a child process.
//!
//! Environment: `SLUICE_TEST_BINARY` (the `sluice` binary to run),
//! `SLUICE_TEST_KAFKA_BROKERS` (default 127.0.0.1:9092),
//! `SLUICE_TEST_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/%2f),
//! `SLUICE_TEST_S3_ENDPOINT` (default http://127.0.0.1:8333), `SLUICE_TEST_S3_BUCKET`
//! (default sluice-test), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_REGION`.
#![allow(dead_code, clippy::unwrap_used)]

pub mod amqp;
pub mod ceph;
pub mod cli;
pub mod job_dir;
pub mod notices;
pub mod observe;
pub mod poison;
pub mod rss;
pub mod serve;
pub mod sleepy;

// Not every test binary uses them; each compiles this module on its own.
#[allow(unused_imports)]
pub use job_dir::*;
#[allow(unused_imports)]
pub use observe::{done_objects, http_get, processes_with};
#[allow(unused_imports)]
pub use rss::{TreeUsage, status_kib, tree_rss_kib, tree_usage};
/// `wait_for(what, timeout, check)`: polls `check` until it holds; panics naming `what`
/// after `timeout`. `unique(prefix)`: a name no other test run uses.
#[allow(unused_imports)]
pub use sluice_connectors::testing::{unique, wait_until_within as wait_for};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub struct Env {
    pub brokers: String,
    pub amqp_url: String,
    pub s3_endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

pub fn env() -> Env {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    Env {
        brokers: var("SLUICE_TEST_KAFKA_BROKERS", "127.0.0.1:9092"),
        amqp_url: var(
            "SLUICE_TEST_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        ),
        s3_endpoint: var("SLUICE_TEST_S3_ENDPOINT", "http://127.0.0.1:8333"),
        bucket: var("SLUICE_TEST_S3_BUCKET", "sluice-test"),
        access_key: var("AWS_ACCESS_KEY_ID", "sluice"),
        secret_key: var("AWS_SECRET_ACCESS_KEY", "sluice-secret-key"),
        region: var("AWS_REGION", "us-east-1"),
    }
}

// ---------------------------------------------------------------------------------------
// Kafka

pub async fn create_topic(env: &Env, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic request");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic}: {code}"));
    }
}

/// One click event as the example job expects it.
#[derive(Debug, Clone)]
pub struct Click {
    pub event_id: String,
    pub user_id: i64,
    pub host: String,
    pub ts: String,
    pub date: String,
}

impl Click {
    pub fn numbered(i: usize) -> Self {
        let hosts = ["Shop.Example.com", "blog.example.org", "WWW.example.net"];
        let day = 20 + i % 3;
        Click {
            event_id: format!("e-{i:06}"),
            user_id: (i % 977) as i64,
            host: hosts[i % hosts.len()].to_owned(),
            ts: format!(
                "2026-11-{day}T{:02}:{:02}:{:02}.{:03}Z",
                i % 24,
                i % 60,
                (i / 7) % 60,
                i % 1000
            ),
            date: format!("2026-11-{day}"),
        }
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "event_id": self.event_id,
            "user_id": self.user_id,
            "url": format!("https://{}/p/{}?ref=test", self.host, self.user_id),
            "ts": self.ts,
            "action": "click",
        })
        .to_string()
    }
}

/// Produces keyed events; returns, per partition, the offset after the last one written.
pub async fn produce(env: &Env, topic: &str, payloads: &[(String, String)]) -> BTreeMap<i32, i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let mut ends = BTreeMap::new();
    for chunk in payloads.chunks(2000) {
        let sends = chunk.iter().map(|(key, payload)| {
            let record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload.as_str())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "source",
                    value: Some("e2e"),
                }));
            producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            let delivery = result.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
            let end = ends.entry(delivery.partition).or_insert(0);
            *end = (*end).max(delivery.offset + 1);
        }
    }
    ends
}

/// The group's committed offsets for partitions `0..partitions` (missing = not committed).
pub fn committed(env: &Env, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    CommittedProbe::new(env, group).committed(topic, partitions)
}

/// Reads a group's committed offsets over one connection, for tests that poll them often.
pub struct CommittedProbe {
    consumer: BaseConsumer,
}

impl CommittedProbe {
    pub fn new(env: &Env, group: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.brokers)
            .set("group.id", group)
            .create()
            .expect("consumer");
        CommittedProbe { consumer }
    }

    /// Committed offsets for partitions `0..partitions` (missing = not committed).
    pub fn committed(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        committed_offsets(&self.consumer, topic, partitions)
    }
}

fn committed_offsets(consumer: &BaseConsumer, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// S3

pub fn s3(env: &Env) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&env.s3_endpoint)
            .with_allow_http(true)
            .with_bucket_name(&env.bucket)
            .with_region(&env.region)
            .with_access_key_id(&env.access_key)
            .with_secret_access_key(&env.secret_key)
            .build()
            .expect("s3 client"),
    )
}

/// One output row of the example job, with the Hive partition it was found under.
#[derive(Debug, Clone)]
pub struct OutputRow {
    pub event_id: String,
    pub user_id: i64,
    pub domain: String,
    pub ts_ms: i64,
    pub partition_date: String,
    pub object: String,
}

/// Every row of every Parquet object under `prefix` (skipping `_sluice/`).
pub async fn read_rows(env: &Env, prefix: &str) -> Vec<OutputRow> {
    let mut rows = Vec::new();
    for (key, bytes) in parquet_objects(env, prefix).await {
        rows.extend(rows_of_parquet(&key, bytes));
    }
    rows
}

/// Every dead letter under the job's default destination, `<prefix>/_sluice/dead_letters/`.
pub async fn read_dead_letters(env: &Env, prefix: &str) -> Vec<serde_json::Value> {
    let mut letters = Vec::new();
    let dead = format!("{prefix}/_sluice/dead_letters");
    for (_, bytes) in objects_under(env, &dead, |_| true).await {
        for line in std::str::from_utf8(&bytes).unwrap().lines() {
            letters.push(serde_json::from_str(line).unwrap());
        }
    }
    letters
}

/// Every object under `prefix` whose key passes `keep`, key and bytes.
pub async fn objects_under(
    env: &Env,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, bytes::Bytes)> {
    let store = s3(env);
    let objects: Vec<_> = store
        .list(Some(&ObjectPath::from(prefix)))
        .try_collect()
        .await
        .expect("list objects");
    let mut found = Vec::new();
    for object in objects {
        let key = object.location.to_string();
        if keep(&key) {
            let bytes = store.get(&object.location).await.unwrap().bytes().await;
            found.push((key, bytes.unwrap()));
        }
    }
    found
}

/// The example job's rows in one Parquet object, with the `event_date=` partition of its key.
pub fn rows_of_parquet(key: &str, bytes: bytes::Bytes) -> Vec<OutputRow> {
    let date = key
        .split('/')
        .find_map(|seg| seg.strip_prefix("event_date="))
        .unwrap_or_else(|| panic!("{key} is not under an event_date= partition"))
        .to_owned();
    let mut rows = Vec::new();
    for batch in record_batches(bytes) {
        assert!(
            batch.column_by_name("event_date").is_none(),
            "partition column inside the file"
        );
        let ids = batch.column_by_name("event_id").unwrap().as_string::<i32>();
        let users = batch
            .column_by_name("user_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let domains = batch.column_by_name("domain").unwrap().as_string::<i32>();
        let ts = batch
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        for i in 0..batch.num_rows() {
            rows.push(OutputRow {
                event_id: ids.value(i).to_owned(),
                user_id: users.value(i),
                domain: domains.value(i).to_owned(),
                ts_ms: ts.value(i),
                partition_date: date.clone(),
                object: key.to_owned(),
            });
        }
    }
    rows
}

/// Asserts the output is `clicks`, each exactly once, transformed as the example job does:
/// the domain lowercased, the user kept, the timestamp parsed, under its date's partition.
pub fn assert_rows_are_the_clicks(rows: &[OutputRow], clicks: &[Click]) {
    let counts = count_ids(rows);
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (rows.len(), counts.len(), duplicated),
        (clicks.len(), clicks.len(), 0),
        "every event exactly once (rows, distinct ids, duplicated ids)"
    );
    let by_id: HashMap<_, _> = rows.iter().map(|row| (row.event_id.clone(), row)).collect();
    for click in clicks {
        let row = by_id[&click.event_id];
        assert_eq!(
            row.domain,
            click.host.to_lowercase(),
            "domain of {}",
            click.event_id
        );
        assert_eq!(row.user_id, click.user_id);
        assert_eq!(
            row.partition_date, click.date,
            "partition of {}",
            click.event_id
        );
        let expected_ms = parse_rfc3339_ms(&click.ts);
        assert_eq!(row.ts_ms, expected_ms, "ts of {}", click.event_id);
    }
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn parse_rfc3339_ms(ts: &str) -> i64 {
    let num = |range: std::ops::Range<usize>| ts[range].parse::<i64>().unwrap();
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // days from civil (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + num(11..13)) * 60 + num(14..16)) * 60_000 + num(17..19) * 1000 + num(20..23)
}

/// The record batches of one Parquet file.
pub fn record_batches(bytes: bytes::Bytes) -> impl Iterator<Item = RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    reader.map(|batch| batch.unwrap())
}

/// Counts rows per event id.
pub fn count_ids(rows: &[OutputRow]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for row in rows {
        *counts.entry(row.event_id.clone()).or_insert(0) += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Jobs and the sluice binary

/// The `sluice` binary: `SLUICE_TEST_BINARY` when set (a copy kept apart from a target
/// directory other checkouts also build into), else Cargo's for tests; for the benchmark
/// example (built beside it), `target/<profile>/sluice`.
pub fn sluice_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_TEST_BINARY") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_sluice") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("sluice")
}

/// Runs `sluice ARGS… DIR` to its end with the test's S3 credentials; panics with its
/// stderr unless it succeeds.
pub fn sluice_ok(env: &Env, args: &[&str], dir: &Path) -> Output {
    let output = Command::new(sluice_binary())
        .args(args)
        .arg(dir)
        .env("AWS_ACCESS_KEY_ID", &env.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_key)
        .env("AWS_REGION", &env.region)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sluice {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sluice` as a child process, its output captured to a file.
pub struct Sluice {
    pub child: Child,
    pub log: PathBuf,
}

impl Sluice {
    pub fn run(env: &Env, job: &JobDir, tag: &str) -> Sluice {
        Sluice::run_with(env, job, tag, &[])
    }

    /// `sluice run JOB_DIR ARGS...`.
    pub fn run_with(env: &Env, job: &JobDir, tag: &str, args: &[&str]) -> Sluice {
        let mut all = vec!["run", job.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let log = job.path().join(format!("sluice-{tag}.log"));
        Sluice::spawn(env, &all, &[], log)
    }

    /// `sluice ARGS...` as a child process with the test's S3 credentials and `envs`
    /// (set last, so they win), its stdout and stderr captured to `log`.
    pub fn spawn(env: &Env, args: &[&str], envs: &[(&str, &str)], log: PathBuf) -> Sluice {
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new(sluice_binary())
            .args(args)
            .env("SLUICE_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", &env.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &env.secret_key)
            .env("AWS_REGION", &env.region)
            .env("SLUICE_TEST_PLATFORM_SECRET", "do-not-leak")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("start sluice");
        Sluice { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn terminate(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// SIGTERM, then asserts a clean exit within `timeout` (panics with the logs).
    pub fn stop_cleanly(&mut self, timeout: Duration) {
        self.terminate();
        let status = self.wait(timeout);
        assert!(status.success(), "exit {status}; logs:\n{}", self.logs());
    }

    /// Waits for exit; panics with the logs after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sluice did not exit within {timeout:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with the logs if sluice has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("sluice exited early with {status}; logs:\n{}", self.logs());
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every object under `prefix` except `_sluice/` bookkeeping, all `.parquet`, with bytes.
pub async fn parquet_objects(env: &Env, prefix: &str) -> Vec<(String, bytes::Bytes)> {
    let found = objects_under(env, prefix, |key| !key.contains("/_sluice/")).await;
    for (key, _) in &found {
        assert!(key.ends_with(".parquet"), "unexpected object {key}");
    }
    found
}

/// Waits until the group has committed `ends` on every partition, while sluice runs.
pub async fn wait_committed(
    env: &Env,
    job: &JobDir,
    sluice: &mut Sluice,
    ends: &BTreeMap<i32, i64>,
    timeout: Duration,
) {
    let partitions = ends.keys().max().map_or(0, |p| p + 1);
    let deadline = Instant::now() + timeout;
    loop {
        sluice.assert_running();
        let committed = committed(env, &job.group(), &job.topic, partitions);
        if ends.iter().all(|(p, end)| committed.get(p) == Some(end)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: committed {committed:?}, expected {ends:?}; logs:\n{}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
