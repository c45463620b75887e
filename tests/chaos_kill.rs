//! Exactly-once under `kill -9`: 200,000 keyed records on 4 partitions, `sluice run`
//! killed with SIGKILL 20 times (at random moments 50 ms – 2.5 s after its first
//! partition assignment; every other kill as soon as a range is seen between its intent
//! and commit markers, within such a moment) and restarted each time, then a last run that finishes and stops with
//! SIGTERM. The Parquet output holds every record exactly
//! once, and no object is a leftover of an unfinished range.
//!
//! The kill moments come from a seeded PRNG (`SLUICE_CHAOS_SEED` overrides the seed), so
//! a failing run can be repeated.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use common::*;
use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _};

const RECORDS: usize = 200_000;
const PARTITIONS: i32 = 4;
const KILLS: usize = 20;
const DEFAULT_SEED: u64 = 0x5eed_c4a0_5eed_c4a0;

/// xorshift64*: small, seeded, good enough to spread kill moments.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `low..high` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// `cat` in stream mode, pausing 20 ms after each batch so 200,000 records take many
/// runs (plain `cat` writes them all within a few seconds of the first assignment).
const SLOW_CAT: &str = r#"while IFS= read -r line; do
  printf '%s\n' "$line"
  if [ -z "$line" ]; then sleep 0.02; fi
done
"#;

fn chaos_job(env: &Env, topic: &str) -> JobDir {
    let name = unique("e2e").to_lowercase();
    let prefix = format!("{name}/clicks");
    let toml = JobToml::new(&name)
        .kafka(&env.brokers, topic)
        .set("trigger.kafka", "start", "earliest")
        .set("function", "command", ["sh", "slow_cat.sh"])
        .set("function", "mode", "stream")
        .set("function", "timeout", "30s")
        .set("batch", "max_records", 200_usize)
        .set("batch", "max_wait", "200ms")
        .set("output", "partition_by", ["action"])
        .set("output", "max_file_age", "300ms")
        .set("output", "max_file_size", "16KiB")
        .schema(r#"{ event_id = "utf8 not null", user_id = "int64", url = "utf8", ts = "timestamp_ms", action = "utf8" }"#);
    let job = JobDir::with_toml(&env.output_to(toml, &prefix), topic, &prefix);
    job.write("slow_cat.sh", SLOW_CAT);
    job
}

/// Markers of the job's topic: per partition, (intents, commits) as (first, last).
type Markers = BTreeMap<i32, (Vec<(i64, i64)>, Vec<(i64, i64)>)>;

async fn markers(env: &Env, job: &JobDir) -> Markers {
    let folder = format!("{}/_sluice/kafka/{}/", job.prefix, job.topic);
    let objects: Vec<_> = s3(env)
        .list(Some(&ObjectPath::from(folder.as_str())))
        .try_collect()
        .await
        .unwrap();
    let mut found = Markers::new();
    for object in objects {
        let key = object.location.to_string();
        let tail = key.strip_prefix(&folder).unwrap();
        let (partition, file) = tail.split_once('/').unwrap();
        let (range, kind) = file.split_once('.').unwrap();
        let (first, last) = range.split_once('-').unwrap();
        let range = (first.parse().unwrap(), last.parse().unwrap());
        let entry = found.entry(partition.parse().unwrap()).or_default();
        match kind {
            "intent.json" => entry.0.push(range),
            "commit.json" => entry.1.push(range),
            "redo.json" => {}
            other => panic!("unexpected marker {key} ({other})"),
        }
    }
    found
}

/// Partitions whose latest intent has no commit marker.
fn unfinished(markers: &Markers) -> Vec<i32> {
    markers
        .iter()
        .filter(|(_, (intents, commits))| {
            let latest_intent = intents.iter().map(|r| r.1).max();
            let latest_commit = commits.iter().map(|r| r.1).max();
            latest_intent.is_some_and(|i| latest_commit.is_none_or(|c| c < i))
        })
        .map(|(p, _)| *p)
        .collect()
}

/// Every Parquet object under the job's output (markers and dead letters aside), with
/// the event ids it holds.
async fn ids_per_object(env: &Env, job: &JobDir) -> BTreeMap<String, Vec<String>> {
    let mut found = BTreeMap::new();
    for (key, bytes) in common::parquet_objects(env, &job.prefix).await {
        let mut ids = Vec::new();
        for batch in record_batches(bytes) {
            let column = batch.column_by_name("event_id").unwrap().as_string::<i32>();
            ids.extend((0..batch.num_rows()).map(|i| column.value(i).to_owned()));
        }
        found.insert(key, ids);
    }
    found
}

/// `(partition, first, last)` from `<topic>-<partition>-<first:020>-<last:020>.parquet`.
fn range_of(object: &str, topic: &str) -> (i32, i64, i64) {
    let file = object.rsplit('/').next().unwrap();
    let rest = file
        .strip_prefix(&format!("{topic}-"))
        .and_then(|r| r.strip_suffix(".parquet"))
        .unwrap_or_else(|| panic!("{object} is not named from a kafka range"));
    let parts: Vec<&str> = rest.split('-').collect();
    assert_eq!(parts.len(), 3, "{object}");
    (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_still_writes_every_record_exactly_once() {
    let started = Instant::now();
    let env = env();
    let topic = unique("chaos");
    create_topic(&env, &topic, PARTITIONS).await;
    let payloads: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("user-{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(&env, &topic, &payloads).await;
    assert_eq!(ends.len(), PARTITIONS as usize, "{ends:?}");
    assert_eq!(ends.values().sum::<i64>(), RECORDS as i64);
    eprintln!("produced {RECORDS} records in {:?}", started.elapsed());

    let job = chaos_job(&env, &topic);
    let seed = std::env::var("SLUICE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut prng = Prng(seed | 1);
    let mut mid_flight = 0;
    let mut progress = Vec::new();
    for kill in 0..KILLS {
        let mut sluice = Sluice::run(&env, &job, &format!("kill-{kill}"));
        // The group join takes seconds on the local broker (and longer while killed
        // members are still in the group): the random moment counts from the first
        // assignment, so kills land while ranges are being written.
        let assigned = Instant::now() + Duration::from_secs(20);
        while Instant::now() < assigned && !sluice.logs().contains("kafka partitions assigned") {
            sluice.assert_running();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = prng.millis(50, 2500);
        if kill % 2 == 0 {
            tokio::time::sleep(delay).await;
        } else {
            // Targeted: kill as soon as a range is seen between its intent and its commit
            // marker (or at the random moment if none is seen by then).
            let until = Instant::now() + delay;
            while Instant::now() < until && unfinished(&markers(&env, &job).await).is_empty() {}
        }
        if let Some(status) = sluice.child.try_wait().unwrap() {
            panic!("sluice exited by itself with {status}:\n{}", sluice.logs());
        }
        sluice.child.kill().unwrap(); // SIGKILL
        sluice.child.wait().unwrap();
        let found = markers(&env, &job).await;
        let open = unfinished(&found);
        if !open.is_empty() {
            mid_flight += 1;
        }
        let committed = committed(&env, &job.group(), &topic, PARTITIONS);
        let done: i64 = committed.values().sum();
        progress.push(done);
        eprintln!(
            "kill {kill}: after {delay:?}, group offsets {committed:?} ({done} of {RECORDS}), unfinished ranges on partitions {open:?}"
        );
    }

    let mut last = Sluice::run(&env, &job, "final");
    wait_committed(&env, &job, &mut last, &ends, Duration::from_secs(300)).await;
    last.stop_cleanly(Duration::from_secs(20));
    let redone: usize = (0..KILLS)
        .map(|k| format!("kill-{k}"))
        .chain(["final".to_owned()])
        .map(|tag| {
            std::fs::read_to_string(job.path().join(format!("sluice-{tag}.log")))
                .unwrap_or_default()
                .matches("unfinished range written again")
                .count()
        })
        .sum();
    eprintln!(
        "{KILLS} kills, {mid_flight} left a range between intent and commit marker; {redone} ranges written again by recovery; progress at each kill {progress:?}; total {:?}",
        started.elapsed()
    );

    // Every record exactly once.
    let objects = ids_per_object(&env, &job).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for ids in objects.values() {
        for id in ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
    }
    let missing: Vec<_> = (0..RECORDS)
        .map(|i| Click::numbered(i).event_id)
        .filter(|id| !counts.contains_key(id.as_str()))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "records missing: {missing:?}");
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "records written twice: {duplicated:?}"
    );
    assert_eq!(counts.len(), RECORDS);

    // No leftover of an unfinished range: nothing is unfinished, every object is named
    // from a range at or below its partition's latest commit marker, the ranges of a
    // partition never overlap, and the latest commit marker's objects all exist.
    let found = markers(&env, &job).await;
    assert!(unfinished(&found).is_empty(), "unfinished: {found:?}");
    let mut ranges: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for object in objects.keys() {
        let (partition, first, last) = range_of(object, &topic);
        let latest = found[&partition].1.iter().map(|r| r.1).max().unwrap();
        assert!(
            last <= latest,
            "{object} is past the latest committed range"
        );
        ranges.entry(partition).or_default().push((first, last));
    }
    for (partition, ranges) in &mut ranges {
        ranges.sort();
        ranges.dedup();
        for pair in ranges.windows(2) {
            assert!(
                pair[0].1 < pair[1].0,
                "partition {partition}: ranges {:?} and {:?} overlap",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(ranges.last().unwrap().1 + 1, ends[partition]);
    }
    let prefix = format!("{}/_sluice/kafka/{topic}", job.prefix);
    for (partition, (_, commits)) in &found {
        assert_eq!(commits.len(), 1, "older commit markers are pruned");
        let (first, last) = commits[0];
        let marker = format!("{prefix}/{partition}/{first:020}-{last:020}.commit.json");
        let body = s3(&env)
            .get(&ObjectPath::from(marker.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for object in manifest["objects"].as_array().unwrap() {
            assert!(
                objects.contains_key(object.as_str().unwrap()),
                "{object} listed by {marker} is missing"
            );
        }
    }
}
