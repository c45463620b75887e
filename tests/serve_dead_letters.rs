//! End to end: the dead letters of a job registered on `sluice serve`, over the API and
//! `sluice dlq list|show|replay NAME --server`, against the real broker and S3 endpoint.
//!
//! A Kafka job whose function refuses three records dead-letters them and commits the
//! rest; `dlq list` and `dlq show` count and print them; a read token cannot replay (exit
//! 4); after v2 (the fixed function) is deployed, `dlq replay` lands them beside the
//! running job, which keeps running and consuming: every record exactly once, nothing
//! pending any more, and the token in no log line.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::serve::Serve;
use common::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "dlq-adm-4b7e19c2";
const READ_TOKEN: &str = "dlq-rd-8d2f60a1";

/// Runs the example transform on every record, unless the batch holds one of the ids in
/// argv[1] (comma separated): then it fails the batch.
const POISONED: &str = r#"
import json, sys
import transform
targets = [t for t in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if t]
lines = [l for l in sys.stdin.read().splitlines() if l]
if any(json.loads(l).get("event_id") in targets for l in lines):
    print("refusing this batch", file=sys.stderr)
    sys.exit(1)
for line in lines:
    sys.stdout.write(json.dumps(transform.transform(json.loads(line))) + "\n")
"#;

fn clicks(range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(Click::numbered)
        .map(|click| (click.event_id.clone(), click.json()))
        .collect()
}

/// The job's function refusing `targets`.
fn command(job: JobToml, targets: &[String]) -> JobToml {
    job.set(
        "function",
        "command",
        ["python3", "poisoned.py", &targets.join(",")],
    )
}

/// Waits until the rows under `prefix` cover `expected` ids, each exactly once.
async fn wait_rows(env: &Env, prefix: &str, expected: usize, serve: &Serve) {
    wait_for(
        &format!("{expected} rows under {prefix}"),
        Duration::from_secs(120),
        async || {
            let counts = count_ids(&read_rows(env, prefix).await);
            if let Some((id, n)) = counts.iter().find(|(_, n)| **n > 1) {
                panic!("{id} written {n} times; serve logs:\n{}", serve.logs());
            }
            counts.len() == expected
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_beside_the_running_job() {
    let env = env();
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::with_tokens(
        &env,
        work.path(),
        &format!("ops:admin:{ADMIN_TOKEN}\nci:read:{READ_TOKEN}\n"),
    )
    .await;

    let topic = unique("serve-dlq");
    create_topic(&env, &topic, 1).await;
    let poison: Vec<String> = [17, 150, 299]
        .iter()
        .map(|&i| Click::numbered(i).event_id)
        .collect();
    let job = JobDir::new(&env, &topic, |job| {
        command(job, &poison)
            .set("function", "mode", "exec")
            .set("function", "retry_backoff", "100ms")
            .set("function", "max_attempts", 2_i64)
    });
    job.write("poisoned.py", POISONED);
    let name = job.name.as_str();
    let v1 = serve.json(
        ADMIN_TOKEN,
        &["deploy", job.path().to_str().unwrap(), "--timeout", "90s"],
    );
    assert_eq!(v1["deployed"]["version"], 1);
    produce(&env, &topic, &clicks(0..300)).await;
    wait_rows(&env, &job.prefix, 297, &serve).await;
    wait_for("3 dead letters", Duration::from_secs(60), async || {
        read_dead_letters(&env, &job.prefix).await.len() == 3
    })
    .await;

    // Listed and shown over the API, by the read token too.
    let listed = serve.cli(READ_TOKEN, &["dlq", "list", name, "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let summary: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(summary["total"], 3, "{summary}");
    assert_eq!(summary["unit"], "objects");
    let first_error = summary["objects"][0]["first_error"].as_str().unwrap();
    assert!(first_error.contains("refusing this batch"), "{summary}");
    let table = serve.cli(READ_TOKEN, &["dlq", "list", name]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("3 dead letters in"), "{table}");
    let shown = serve.json(ADMIN_TOKEN, &["dlq", "show", name, "--limit", "2"]);
    assert_eq!(shown["letters"].as_array().unwrap().len(), 2, "{shown}");
    let mut payloads: Vec<String> = serve.json(ADMIN_TOKEN, &["dlq", "show", name])["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|letter| {
            let payload: Value =
                serde_json::from_str(letter["letter"]["payload"].as_str().unwrap()).unwrap();
            payload["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    payloads.sort();
    let mut expected = poison.clone();
    expected.sort();
    assert_eq!(payloads, expected);

    // Replaying needs an admin token; an unknown job is refused (exit 1).
    let denied = serve.cli(READ_TOKEN, &["dlq", "replay", name]);
    assert_eq!(denied.status.code(), Some(4), "{denied:?}");
    let unknown = serve.cli(ADMIN_TOKEN, &["dlq", "list", "no-such-job"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");

    // Fix the function (v2), then replay beside the running job.
    let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
    let fixed = toml.replace(&format!("{:?}", poison.join(",")), "\"\"");
    assert_ne!(fixed, toml, "the function's command is in job.toml");
    job.write("job.toml", &fixed);
    let v2 = serve.json(
        ADMIN_TOKEN,
        &["deploy", job.path().to_str().unwrap(), "--timeout", "90s"],
    );
    assert_eq!(v2["deployed"]["version"], 2);
    let replay = serve.json(ADMIN_TOKEN, &["dlq", "replay", name, "--timeout", "2m"]);
    assert_eq!(replay["state"], "done", "{replay}\n{}", serve.logs());
    assert_eq!(replay["version"], 2);
    assert_eq!(replay["total"], 3);
    assert_eq!(replay["rows_out"], 3);
    assert_eq!(replay["failed_again"], 0);
    wait_rows(&env, &job.prefix, 300, &serve).await;

    // Nothing pending any more; the job kept its state and still consumes.
    assert_eq!(serve.json(ADMIN_TOKEN, &["dlq", "list", name])["total"], 0);
    let shown = serve.json(ADMIN_TOKEN, &["jobs", "show", name]);
    assert_eq!(
        (shown["state"].as_str(), shown["running_version"].as_i64()),
        (Some("running"), Some(2)),
        "{shown}"
    );
    produce(&env, &topic, &clicks(300..400)).await;
    wait_rows(&env, &job.prefix, 400, &serve).await;
    let again = serve.json(ADMIN_TOKEN, &["dlq", "replay", name]);
    assert_eq!(
        (again["state"].as_str(), again["total"].as_u64()),
        (Some("done"), Some(0))
    );

    let logs = serve.logs();
    assert!(
        !logs.contains(ADMIN_TOKEN) && !logs.contains(READ_TOKEN),
        "a token is in the logs"
    );
}
