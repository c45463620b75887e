//! Poison records for the dead-letter tests: a Kafka topic of clicks, a function that
//! refuses every batch holding one of three of them until it is fixed, and what the
//! three must become (dead letters with their origin and error, then rows after a
//! replay).
#![allow(dead_code, clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use super::{
    Click, Env, JobDir, JobToml, OutputRow, Sluice, count_ids, create_topic, produce, read_rows,
    sluice_ok, unique, wait_committed,
};

/// The head of a test function wrapping the example: `run_batch(lines, out)` runs the
/// example's SDK transform on each record; `mode` and the target ids come from argv.
pub const EXAMPLE_BATCH_PY: &str = r#"
import json, os, signal, sys, time
import transform
def run_batch(lines, out):  # the example's SDK function, called directly on each record
    for line in lines:
        out.write(json.dumps(transform.transform(json.loads(line))) + "\n")
mode, targets = sys.argv[1], sys.argv[2].split(",")
lines = [l for l in sys.stdin.read().splitlines() if l]
hit = any(json.loads(l).get("event_id") in targets for l in lines)
"#;

/// Refuses (exit 1) every batch holding one of the target ids, unless told `ok`.
const POISON: &str = r#"
if mode == "fail" and hit:
    print("refusing this batch", file=sys.stderr)
    sys.exit(1)
run_batch(lines, sys.stdout)
"#;

pub const RECORDS: usize = 1000;
pub const POISONED: [usize; 3] = [17, 500, 998];

/// The event ids of the poisoned records.
pub fn targets() -> Vec<String> {
    POISONED
        .iter()
        .map(|&i| Click::numbered(i).event_id)
        .collect()
}

fn function(job: JobToml, mode: &str) -> JobToml {
    job.set(
        "function",
        "command",
        ["python3", "poison.py", mode, &targets().join(",")],
    )
    .set("function", "mode", "exec")
    .set("function", "max_attempts", 2_i64)
    .set("function", "retry_backoff", "100ms")
}

/// A fresh one-partition topic of `count` numbered clicks keyed `k<i>`, with the source
/// header; returns it and its end offset.
pub async fn topic_of_clicks(
    env: &Env,
    tag: &str,
    count: usize,
) -> (String, std::collections::BTreeMap<i32, i64>) {
    let topic = unique(tag);
    create_topic(env, &topic, 1).await;
    let payloads: Vec<_> = (0..count)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(env, &topic, &payloads).await;
    assert_eq!(ends.get(&0), Some(&(count as i64)));
    (topic, ends)
}

/// A Kafka topic of `RECORDS` clicks and a job on it to which `dead_letter` adds its
/// `[dead_letter…]` table; runs it until every offset is committed.
pub async fn run_poisoned_job(
    env: &Env,
    tag: &str,
    dead_letter: impl FnOnce(JobToml) -> JobToml,
) -> JobDir {
    let (topic, ends) = topic_of_clicks(env, tag, RECORDS).await;
    let job = JobDir::new(env, &topic, |job| dead_letter(function(job, "fail")));
    job.write("poison.py", &format!("{EXAMPLE_BATCH_PY}{POISON}"));
    let mut sluice = Sluice::run(env, &job, "run");
    wait_committed(env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.stop_cleanly(Duration::from_secs(10));
    let logs = sluice.logs();
    assert!(
        logs.contains("splitting it to isolate the records at fault"),
        "no bisection logged:\n{logs}"
    );
    job
}

/// `expected` distinct event ids, none twice.
pub fn assert_exactly_once(rows: &[OutputRow], expected: usize) {
    let counts = count_ids(rows);
    assert_eq!(counts.len(), expected, "distinct ids");
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dupes.is_empty(), "duplicated ids: {dupes:?}");
    assert_eq!(rows.len(), expected);
}

/// The three letters carry the original record, its origin and its error.
pub fn assert_poison_letters(letters: &[serde_json::Value], topic: &str) {
    assert_eq!(letters.len(), 3, "{letters:?}");
    let mut offsets: Vec<i64> = letters
        .iter()
        .map(|l| l["origin"]["offset"].as_i64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, POISONED.map(|i| i as i64));
    for letter in letters {
        let offset = letter["origin"]["offset"].as_i64().unwrap();
        assert_eq!(letter["id"], format!("kafka:{topic}/0/{offset}"));
        assert_eq!(letter["attempts"], 2);
        assert_eq!(letter["key"], format!("k{offset}"));
        assert_eq!(letter["headers"]["source"], "e2e");
        let payload: serde_json::Value =
            serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["event_id"],
            Click::numbered(offset as usize).event_id
        );
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("refusing this batch"), "{error}");
    }
}

/// `sluice dlq VERB JOB`, which must succeed.
pub fn dlq(env: &Env, job: &JobDir, verb: &str) -> Output {
    sluice_ok(env, &["dlq", verb], job.path())
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fixes the function and replays: the three land in the output once, nothing is left.
pub async fn fix_and_replay(env: &Env, job: &JobDir) {
    let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
    let fixed = toml.replace(r#""poison.py","fail""#, r#""poison.py","ok""#);
    assert_ne!(fixed, toml, "the function's command is in job.toml");
    job.write("job.toml", &fixed);
    let replay = dlq(env, job, "replay");
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(
        stderr.contains("replayed 3 dead letters: 3 rows written, 0 failed again"),
        "{stderr}"
    );
    assert_exactly_once(&read_rows(env, &job.prefix).await, RECORDS);
    let listed = stdout(&dlq(env, job, "list"));
    assert!(listed.starts_with("0 dead letters"), "{listed}");
}
