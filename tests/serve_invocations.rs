//! End to end: the invocation records and the function logs of `sluice serve`, on SQLite
//! and on PostgreSQL, against the real broker and S3 endpoint.
//!
//! A Kafka job whose function (exec mode) writes a line to stderr per batch, rejects one
//! record with `$error` and fails (exit 3, with a last word on stderr) every batch holding
//! a poisoned record, runs over a topic of known size. Then: the invocation records add up
//! (rows out + rejected + dead-lettered over all attempts = the records produced; the
//! attempts that succeeded took in exactly what they put out), the failing attempts show
//! `function_error` and the function's last stderr line, the status page shows them, and
//! `sluice logs` (and `--follow`, as new events arrive) shows the function's lines with
//! instance and batch, with the secret the function prints masked.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::serve::{ScratchDatabase, Serve};
use common::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "adm-3b9e1d7a5c20";
const RECORDS: usize = 600;
const POISON: usize = 123;
const REJECT: usize = 321;
/// A secret in the function's environment (`${INVOC_E2E_TOKEN}`), which it prints.
const SECRET: &str = "tok-invoc-4f2a9c81d3";

/// The function: the example transform per record, one stderr line per batch, `$error`
/// for the record `argv[3]`, exit 3 for any batch holding `argv[2]`.
const FUNCTION: &str = r#"
import json, os, sys
import transform
tag, poison, reject = sys.argv[1], sys.argv[2], sys.argv[3]
records = [json.loads(l) for l in sys.stdin.read().splitlines() if l]
print(f"{tag}: batch of {len(records)} records from {records[0]['event_id']}", file=sys.stderr, flush=True)
print(f"{tag}: using token {os.environ['TOKEN']}", file=sys.stderr, flush=True)
if any(r["event_id"] == poison for r in records):
    print(f"{tag}: refusing the poisoned record {poison}", file=sys.stderr, flush=True)
    sys.exit(3)
out, errors = [], []
for i, r in enumerate(records):
    if r["event_id"] == reject:
        errors.append(json.dumps({"$error": {"record": i, "message": "rejected on purpose"}}))
    else:
        out.append(json.dumps(transform.transform(r)))
sys.stdout.write("".join(line + "\n" for line in out + errors))
"#;

/// `sluice serve` for this test: its tokens and registry, and the secret its job's
/// function prints.
fn start_serve(env: &Env, data: &Path, registry: Option<&str>, tokens: &Path) -> Serve {
    Serve::start(env, data, "serve", |command| {
        command
            .arg("--tokens")
            .arg(tokens)
            .env("INVOC_E2E_TOKEN", SECRET);
        if let Some(registry) = registry {
            command.arg("--registry").arg(registry);
        }
    })
}

/// `sluice ARGS…` with the admin token and the secret in the environment (`deploy`
/// checks the job's `${INVOC_E2E_TOKEN}` reference against it).
fn client(serve: &Serve, args: &[&str]) -> Command {
    let mut command = serve.command(ADMIN_TOKEN, args);
    command.env("INVOC_E2E_TOKEN", SECRET);
    command
}

/// [`client`], run to its end; it must succeed.
fn cli(serve: &Serve, args: &[&str]) -> Output {
    let output = client(serve, args).output().expect("run the sluice cli");
    assert!(
        output.status.success(),
        "sluice {args:?}: {}\n{}\nserve logs:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        serve.logs()
    );
    output
}

/// The JSON [`cli`] prints with `--json`.
fn json(serve: &Serve, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_slice(&cli(serve, &args).stdout).unwrap()
}

fn sum(records: &[Value], field: &str, keep: impl Fn(&Value) -> bool) -> i64 {
    records
        .iter()
        .filter(|record| keep(record))
        .map(|record| record[field].as_i64().unwrap())
        .sum()
}

async fn invocations(registry: Option<&str>) {
    let env = env();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, format!("ops:admin:{ADMIN_TOKEN}\n")).unwrap();
    let mut serve = start_serve(&env, &data, registry, &tokens);
    serve.wait_healthy().await;

    let topic = unique("serve-invocations");
    create_topic(&env, &topic, 1).await;
    let payloads: Vec<_> = (0..RECORDS)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    produce(&env, &topic, &payloads).await;
    let tag = unique("invoc-fn");
    let (poison, reject) = (
        Click::numbered(POISON).event_id,
        Click::numbered(REJECT).event_id,
    );
    let job = JobDir::new(&env, &topic, |job| {
        job.set(
            "function",
            "command",
            ["python3", "poison.py", &tag, &poison, &reject],
        )
        .set("function", "mode", "exec")
        .set("function", "max_attempts", 2_i64)
        .set("function", "retry_backoff", "100ms")
        .set("function.env", "TOKEN", "${INVOC_E2E_TOKEN}")
    });
    job.write("poison.py", FUNCTION);
    json(
        &serve,
        &["deploy", job.path().to_str().unwrap(), "--timeout", "90s"],
    );

    // Everything but the two records lands; the invocation records add up to the records
    // produced once the writer has caught up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let body = json(&serve, &["invocations", &job.name, "--limit", "10000"]);
        let records = body["invocations"].as_array().unwrap().clone();
        let settled = sum(&records, "rows_out", |_| true)
            + sum(&records, "rejected", |_| true)
            + sum(&records, "dead_letters", |_| true);
        assert!(settled <= RECORDS as i64, "more than produced: {body:#}");
        if settled == RECORDS as i64 {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{settled} of {RECORDS} records in invocation records: {body:#}\nserve logs:\n{}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ok = |record: &Value| record["outcome"] == "ok";
    let failed = |record: &Value| record["outcome"] != "ok";
    assert_eq!(
        sum(&records, "records_in", ok),
        sum(&records, "rows_out", ok) + sum(&records, "rejected", ok)
    );
    assert_eq!(
        sum(&records, "records_in", ok) + sum(&records, "dead_letters", failed),
        RECORDS as i64
    );
    assert_eq!(sum(&records, "rejected", |_| true), 1);
    assert_eq!(sum(&records, "dead_letters", |_| true), 1);
    let failures: Vec<&Value> = records.iter().filter(|record| failed(record)).collect();
    assert!(failures.len() >= 2, "{records:#?}");
    for failure in &failures {
        assert_eq!(failure["outcome"], "function_error", "{failure:#}");
        let first: i64 = failure["first_position"].as_str().unwrap().parse().unwrap();
        let last: i64 = failure["last_position"].as_str().unwrap().parse().unwrap();
        assert!(
            (first..=last).contains(&(POISON as i64)),
            "a failing attempt without the poisoned record: {failure:#}"
        );
        let tail = failure["stderr_tail"].as_str().unwrap();
        assert!(
            tail.ends_with(&format!("{tag}: refusing the poisoned record {poison}")),
            "{failure:#}"
        );
        assert_eq!(failure["split"], format!("{topic}/0"));
        assert!(failure["instance"].as_str().unwrap().starts_with(&job.name));
    }
    let last_word = failures
        .iter()
        .find(|failure| failure["dead_letters"] == 1)
        .expect("the poisoned record's last attempt");
    assert_eq!(last_word["records_in"], 1);
    assert!(records.iter().all(|record| record["cold_start"] == true));
    // An attempt that succeeded quotes the lines its instance wrote, when they were read
    // before it was recorded.
    assert!(records.iter().filter(|record| ok(record)).any(|record| {
        record["stderr_tail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{tag}: batch of"))
    }));

    // The status page's job page shows them.
    let cookie = format!("sluice_token={ADMIN_TOKEN}");
    let page = serve
        .get_text(&format!("/jobs/{}", job.name), ("cookie", &cookie))
        .await;
    assert!(page.contains("function_error"), "{page}");
    assert!(page.contains("refusing the poisoned record"), "{page}");

    // `sluice logs`: the function's lines, with instance and batch.
    let text = String::from_utf8(cli(&serve, &["logs", &job.name]).stdout).unwrap();
    assert!(
        text.contains(&format!("{tag}: refusing the poisoned record {poison}")),
        "{text}"
    );
    // Secrets masked as everywhere else: in the lines and in the invocation records.
    assert!(text.contains(&format!("{tag}: using token ***")), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let records_text = serde_json::to_string(&records).unwrap();
    assert!(records_text.contains("using token ***"));
    assert!(!records_text.contains(SECRET));
    let json = cli(&serve, &["logs", &job.name, "--json", "--limit", "5000"]);
    let lines: Vec<Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let ids: Vec<&str> = records
        .iter()
        .map(|record| record["id"].as_str().unwrap())
        .collect();
    let tagged = lines.iter().find(|line| {
        line["line"]
            .as_str()
            .unwrap()
            .contains("refusing the poisoned record")
    });
    let tagged = tagged.expect("the refusal among the lines");
    assert!(tagged["instance"].as_str().unwrap().starts_with(&job.name));
    assert!(
        ids.contains(&tagged["batch"].as_str().unwrap()),
        "{tagged} not of a recorded attempt"
    );

    // `sluice logs --follow` prints lines of batches that run after it started.
    let mut follower = client(&serve, &["logs", &job.name, "--follow", "--limit", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The history line first: the follower is connected.
    let first = lines_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains(&tag), "{first}");
    let more: Vec<_> = (RECORDS..RECORDS + 10)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    produce(&env, &topic, &more).await;
    let wanted = format!("records from {}", Click::numbered(RECORDS).event_id);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = lines_rx
            .recv_timeout(remaining)
            .unwrap_or_else(|_| panic!("no {wanted:?} followed; serve logs:\n{}", serve.logs()));
        if line.contains(&wanted) {
            break;
        }
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    let logs = serve.logs();
    assert!(!logs.contains(ADMIN_TOKEN), "the token is in a log line");
    assert!(
        !logs.contains(SECRET),
        "the function's secret is in a log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_records_and_logs_on_sqlite() {
    invocations(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_records_and_logs_on_postgres() {
    let database = ScratchDatabase::create("sluice_invoc");
    invocations(Some(database.url())).await;
}
