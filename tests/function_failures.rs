//! A function that crashes mid-batch once, one that hangs past the timeout once, and one
//! that always fails: the batch is retried, nothing is lost, and nothing is committed
//! before its output is durable.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

/// Wraps the example transform: when the batch holds one of the target ids (comma
/// separated), misbehave (once, or every time for `fail`; `ok` never does), recording
/// each misbehaving attempt in `$OUT/<mode>.marker` (`$OUT` is the job folder itself; the
/// function runs in a read-only copy of it).
const FLAKY: &str = r#"
import json, os, signal, sys, time
import transform
def run_batch(lines, out):  # the example's SDK function, called directly on each record
    for line in lines:
        out.write(json.dumps(transform.transform(json.loads(line))) + "\n")
mode, targets = sys.argv[1], sys.argv[2].split(",")
marker = os.path.join(os.environ["OUT"], mode + ".marker")
lines = [l for l in sys.stdin.read().splitlines() if l]
hit = any(json.loads(l).get("event_id") in targets for l in lines)
if hit and (mode == "fail" or not os.path.exists(marker)):
    with open(marker, "a") as f:
        f.write("attempt\n")
    if mode == "crash":
        run_batch(lines[: len(lines) // 2], sys.stdout)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "hang":
        time.sleep(1000)
    else:
        print("refusing this batch", file=sys.stderr)
        sys.exit(1)
run_batch(lines, sys.stdout)
"#;

const EVENTS: usize = 3000;
const TARGET: usize = 1500;

async fn single_partition_topic(
    env: &Env,
    tag: &str,
) -> (String, std::collections::BTreeMap<i32, i64>) {
    let topic = unique(tag);
    create_topic(env, &topic, 1).await;
    let payloads: Vec<_> = (0..EVENTS)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(env, &topic, &payloads).await;
    assert_eq!(ends.get(&0), Some(&(EVENTS as i64)));
    (topic, ends)
}

fn flaky_job(env: &Env, topic: &str, mode: &str, settings: &str) -> JobDir {
    let target = Click::numbered(TARGET).event_id;
    let job = JobDir::new(
        env,
        topic,
        &format!(
            "command = [\"python3\", \"flaky.py\", \"{mode}\", \"{target}\"]\nmode = \"exec\"\nretry_backoff = \"100ms\"\n{settings}\nenv = {{ OUT = \"OUT_DIR\" }}"
        ),
        "",
    );
    let out = job.writable_by_functions();
    let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
    job.write("job.toml", &toml.replace("OUT_DIR", &out));
    job.write("flaky.py", FLAKY);
    job
}

fn assert_exactly_once(rows: &[OutputRow], expected: usize) {
    let counts = count_ids(rows);
    assert_eq!(counts.len(), expected, "distinct ids");
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dupes.is_empty(), "duplicated ids: {dupes:?}");
    assert_eq!(rows.len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_batch_is_retried_without_loss_or_duplicates() {
    let env = env();
    let (topic, ends) = single_partition_topic(&env, "crash").await;
    let job = flaky_job(&env, &topic, "crash", "max_attempts = 3");
    let mut sluice = Sluice::run(&env, &job, "run");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());

    let attempts = std::fs::read_to_string(job.path().join("crash.marker")).unwrap();
    assert_eq!(attempts.lines().count(), 1, "crashed exactly once");
    let logs = sluice.logs();
    assert!(
        logs.contains("batch failed; retrying"),
        "retry not logged:\n{logs}"
    );
    assert!(
        logs.contains("SIGSEGV") || logs.contains("signal 11"),
        "crash reason not logged:\n{logs}"
    );
    // The crashed attempt's half output must not be in the lake: exactly once.
    assert_exactly_once(&read_rows(&env, &job.prefix).await, EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_past_timeout_is_killed_retried_and_nothing_is_committed_early() {
    let env = env();
    let (topic, ends) = single_partition_topic(&env, "hang").await;
    let job = flaky_job(&env, &topic, "hang", "timeout = \"2s\"\nmax_attempts = 3");
    let mut sluice = Sluice::run(&env, &job, "run");

    let marker = job.path().join("hang.marker");
    wait_for(
        "the function to hang",
        Duration::from_secs(60),
        async || marker.exists(),
    )
    .await;
    // While the batch holding offset TARGET hangs, its position must not be committed.
    let committed = committed(&env, &job.group(), &topic, 1);
    assert!(
        committed.get(&0).is_none_or(|&o| o <= TARGET as i64),
        "committed {committed:?} past the hanging batch at offset {TARGET}"
    );

    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());
    let logs = sluice.logs();
    assert!(
        logs.contains("batch failed; retrying"),
        "retry not logged:\n{logs}"
    );
    assert!(
        logs.contains("did not finish within"),
        "timeout not logged:\n{logs}"
    );
    assert_exactly_once(&read_rows(&env, &job.prefix).await, EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_the_rest_commits_and_replay_lands_them() {
    const RECORDS: usize = 1000;
    let env = env();
    let topic = unique("poison");
    create_topic(&env, &topic, 1).await;
    let payloads: Vec<_> = (0..RECORDS)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(&env, &topic, &payloads).await;
    let poison = [17, 500, 998];
    let targets: Vec<String> = poison
        .iter()
        .map(|&i| Click::numbered(i).event_id)
        .collect();
    let job = flaky_job(&env, &topic, "fail", "max_attempts = 2");
    let command = |mode: &str| {
        format!(
            "command = [\"python3\", \"flaky.py\", \"{mode}\", \"{}\"]",
            targets.join(",")
        )
    };
    let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
    let single = format!(
        "command = [\"python3\", \"flaky.py\", \"fail\", \"{}\"]",
        Click::numbered(TARGET).event_id
    );
    job.write("job.toml", &toml.replace(&single, &command("fail")));

    let mut sluice = Sluice::run(&env, &job, "run");
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());
    let logs = sluice.logs();
    assert!(
        logs.contains("splitting it to isolate the records at fault"),
        "no bisection logged:\n{logs}"
    );

    // The 997 others are written once; the 3 are dead letters with their error (the
    // function's stderr), attempts and origin.
    let rows = read_rows(&env, &job.prefix).await;
    assert!(rows.iter().all(|r| !targets.contains(&r.event_id)));
    assert_exactly_once(&rows, RECORDS - 3);
    let letters = read_dead_letters(&env, &job.prefix).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    let mut offsets: Vec<i64> = letters
        .iter()
        .map(|l| l["origin"]["offset"].as_i64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, vec![17, 500, 998]);
    for letter in &letters {
        assert_eq!(letter["attempts"], 2);
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("refusing this batch"), "{error}");
    }

    // After a fix, `sluice dlq replay` lands them, and they are not pending any more.
    job.write("job.toml", &toml.replace(&single, &command("ok")));
    let replay = std::process::Command::new(sluice_binary())
        .args(["dlq", "replay"])
        .arg(job.path())
        .env("AWS_ACCESS_KEY_ID", &env.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_key)
        .env("AWS_REGION", &env.region)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{stderr}");
    assert!(
        stderr.contains("replayed 3 dead letters: 3 rows written, 0 failed again"),
        "{stderr}"
    );
    assert_exactly_once(&read_rows(&env, &job.prefix).await, RECORDS);
    let listed = std::process::Command::new(sluice_binary())
        .args(["dlq", "list"])
        .arg(job.path())
        .env("AWS_ACCESS_KEY_ID", &env.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_key)
        .env("AWS_REGION", &env.region)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        stdout.starts_with("0 dead letters in 0 objects"),
        "{stdout}"
    );
}
