//! End to end: `sluice serve` with its registry on SQLite and on PostgreSQL, driven by
//! `sluice deploy` and `sluice jobs` over the HTTP API, against the real broker, queue and
//! S3 endpoint.
//!
//! The run, on each registry: serve starts empty; a Kafka job and an AMQP job are
//! deployed and their events land in Parquet; v2 of the Kafka job (a changed transform)
//! is deployed while events flow, and every record lands exactly once across v1 and v2,
//! v2's rows only after v1's; pause leaves no function process within `idle_timeout` +
//! 2 s while the lag grows; resume drains it; `kill -9` of serve and a restart bring both
//! jobs back at their versions and states, the Kafka output still exactly once; delete
//! removes them and leaves no process. Along the way: no token → 401, a read token on a
//! deploy → 403 (exit 4), an invalid bundle → 400 naming the problem, an oversized body
//! → 413, the status page behind a sign-in, and no token in any log line.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::amqp::AmqpAdmin;
use common::serve::{ScratchDatabase, Serve};
use common::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "adm-7c1f0e4b9d2a";
const READ_TOKEN: &str = "rd-5e8a3f6c1b0d";
const IDLE_TIMEOUT_S: u64 = 2;

/// `sluice serve` for this test: its tokens, its registry and a small bundle cap.
fn start_serve(env: &Env, data: &Path, registry: Option<&str>, tokens: &Path, tag: &str) -> Serve {
    Serve::start(env, data, tag, |command| {
        command
            .arg("--tokens")
            .arg(tokens)
            .arg("--max-bundle-size")
            .arg("4MiB");
        if let Some(registry) = registry {
            command.arg("--registry").arg(registry);
        }
    })
}

/// The admin's calls this test makes again and again.
trait AdminCalls {
    fn job(&self, name: &str) -> Value;
    fn deploy(&self, job: &JobDir) -> Value;
}

impl AdminCalls for Serve {
    fn job(&self, name: &str) -> Value {
        self.json(ADMIN_TOKEN, &["jobs", "show", name])
    }

    fn deploy(&self, job: &JobDir) -> Value {
        let path = job.path().to_str().unwrap();
        self.json(ADMIN_TOKEN, &["deploy", path, "--timeout", "90s"])
    }
}

/// A function command line no other job shares, so its processes can be found.
fn function(job: JobToml, tag: &str) -> JobToml {
    job.set("function", "command", ["python3", "transform.py", tag])
        .set("function", "mode", "stream")
        .set("function", "timeout", "30s")
        .set("scaling", "idle_timeout", format!("{IDLE_TIMEOUT_S}s"))
}

fn clicks(range: std::ops::Range<usize>) -> Vec<(String, String)> {
    range
        .map(Click::numbered)
        .map(|click| (click.event_id.clone(), click.json()))
        .collect()
}

fn event_number(event_id: &str) -> usize {
    event_id.trim_start_matches("e-").parse().unwrap()
}

/// Waits until the rows under `prefix` cover `expected` ids; asserts each exactly once.
async fn wait_exactly_once(
    env: &Env,
    prefix: &str,
    expected: usize,
    serve: &Serve,
) -> Vec<OutputRow> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = read_rows(env, prefix).await;
        let counts = count_ids(&rows);
        if let Some((id, n)) = counts.iter().find(|(_, n)| **n > 1) {
            panic!("{id} written {n} times under {prefix}");
        }
        if counts.len() == expected {
            assert_eq!(rows.len(), expected);
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} rows under {prefix}; serve logs:\n{}",
            counts.len(),
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_no_processes(needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let found = processes_with(needle);
        if found.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "function processes {found:?} ({needle}) still there after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lifecycle(registry: Option<&str>) {
    let env = env();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let tokens = work.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("ops:admin:{ADMIN_TOKEN}\nci:read:{READ_TOKEN}\n"),
    )
    .unwrap();
    let mut serve = start_serve(&env, &data, registry, &tokens, "first");
    serve.wait_healthy().await;

    // Starts empty; tokens are required and roles enforced.
    assert_eq!(
        serve.json(ADMIN_TOKEN, &["jobs", "list"])["jobs"],
        serde_json::json!([])
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let anonymous = http
        .get(format!("{}/v1/jobs", serve.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json_or_null().await;
    assert_eq!(body["error"]["code"], "unauthorized");

    // The Kafka job (one partition, so offsets follow event numbers) and the AMQP job.
    let topic = unique("serve-clicks");
    create_topic(&env, &topic, 1).await;
    let kafka_tag = unique("kafka-fn");
    let kafka_job = JobDir::new(&env, &topic, |job| function(job, &kafka_tag));
    let admin = AmqpAdmin::connect(&env).await;
    let queue = unique("serve-clicks-amqp");
    admin.declare_queue(&queue).await;
    let amqp_tag = unique("amqp-fn");
    let amqp_job = JobDir::new_amqp(&env, &queue, |job| function(job, &amqp_tag));

    let denied = serve.cli(READ_TOKEN, &["deploy", kafka_job.path().to_str().unwrap()]);
    assert_eq!(
        denied.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(String::from_utf8_lossy(&denied.stderr).contains("admin token"));

    // Refused bundles change nothing: an invalid job.toml (400, every message), a body over
    // the limit (413).
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("job.toml"),
        "name = \"broken\"\n[function]\ncommand = []\n",
    )
    .unwrap();
    let packed = sluice_platform::control::bundle::pack_folder(broken.path()).unwrap();
    let refused = http
        .put(format!("{}/v1/jobs/broken", serve.url()))
        .bearer_auth(ADMIN_TOKEN)
        .body(packed)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json_or_null().await;
    assert_eq!(body["error"]["code"], "invalid_bundle");
    assert!(
        body["error"]["details"].as_array().unwrap().len() >= 2,
        "{body}"
    );
    let oversized = http
        .put(format!("{}/v1/jobs/broken", serve.url()))
        .bearer_auth(ADMIN_TOKEN)
        .body(vec![0_u8; 5 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    let body: Value = oversized.json_or_null().await;
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(
        serve.json(ADMIN_TOKEN, &["jobs", "list"])["jobs"],
        serde_json::json!([])
    );

    // Deploy both; events flow.
    produce(&env, &topic, &clicks(0..1000)).await;
    admin.publish(&queue, &clicks(0..500)).await;
    let deployed = serve.deploy(&kafka_job);
    assert_eq!(deployed["deployed"]["version"], 1);
    assert_eq!(serve.deploy(&amqp_job)["deployed"]["version"], 1);
    wait_exactly_once(&env, &kafka_job.prefix, 1000, &serve).await;
    wait_exactly_once(&env, &amqp_job.prefix, 500, &serve).await;
    // The registry records the uid the job's functions run as; they run as it.
    let function_uid = serve.job(&kafka_job.name)["function_uid"]
        .as_u64()
        .expect("the job's uid is recorded");
    assert_ne!(function_uid, 0, "functions never run as root");
    for pid in processes_with(&kafka_tag) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(uids) = status.lines().find_map(|line| line.strip_prefix("Uid:")) {
            assert_eq!(
                uids.split_whitespace().next(),
                Some(function_uid.to_string().as_str())
            );
        }
    }
    // The same content again: the same version, nothing restarted.
    assert_eq!(serve.deploy(&kafka_job)["deployed"]["new_version"], false);

    // v2 (a changed transform) while events flow.
    let producer = {
        let env = common::env();
        let topic = topic.clone();
        tokio::spawn(async move {
            for chunk in 0..10 {
                let start = 1000 + chunk * 200;
                produce(&env, &topic, &clicks(start..start + 200)).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let transform = std::fs::read_to_string(kafka_job.path().join("transform.py")).unwrap();
    let changed = transform.replace(
        "\"domain\": (url.hostname or \"\").lower(),",
        "\"domain\": \"v2.\" + (url.hostname or \"\").lower(),",
    );
    assert_ne!(
        changed, transform,
        "the example transform changed; adapt the test"
    );
    kafka_job.write("transform.py", &changed);
    let v2 = serve.deploy(&kafka_job);
    assert_eq!(v2["deployed"]["version"], 2);
    producer.await.unwrap();
    let rows = wait_exactly_once(&env, &kafka_job.prefix, 3000, &serve).await;
    let (v2_rows, v1_rows): (Vec<_>, Vec<_>) =
        rows.iter().partition(|row| row.domain.starts_with("v2."));
    assert!(!v2_rows.is_empty() && !v1_rows.is_empty());
    let last_v1 = v1_rows
        .iter()
        .map(|row| event_number(&row.event_id))
        .max()
        .unwrap();
    let first_v2 = v2_rows
        .iter()
        .map(|row| event_number(&row.event_id))
        .min()
        .unwrap();
    assert!(
        last_v1 < first_v2,
        "v1 wrote up to {last_v1}, v2 from {first_v2}"
    );

    // Pause: drained, no function process within idle_timeout + 2 s, the lag grows.
    let paused = serve.json(ADMIN_TOKEN, &["jobs", "pause", &kafka_job.name]);
    assert_eq!(paused["state"], "paused");
    wait_no_processes(&kafka_tag, Duration::from_secs(IDLE_TIMEOUT_S + 2)).await;
    let before = committed(&env, &kafka_job.group(), &topic, 1);
    let ends = produce(&env, &topic, &clicks(3000..3300)).await;
    assert_eq!(before.get(&0), Some(&3000));
    assert_eq!(
        ends.get(&0),
        Some(&3300),
        "lag of 300 behind the paused job"
    );
    assert_eq!(committed(&env, &kafka_job.group(), &topic, 1), before);
    assert!(processes_with(&kafka_tag).is_empty());
    // The lag is visible while paused: the API's backlog of the job grows to 300.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = serve.job(&kafka_job.name);
        if shown["status"]["backlog"] == 300 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paused job's backlog is not 300: {}\nserve logs:\n{}",
            shown["status"],
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(serve.job(&kafka_job.name)["state"], "paused");
    // Resume drains it.
    assert_eq!(
        serve.json(ADMIN_TOKEN, &["jobs", "resume", &kafka_job.name])["state"],
        "running"
    );
    wait_exactly_once(&env, &kafka_job.prefix, 3300, &serve).await;

    // kill -9 and restart: both jobs back at their versions and states.
    serve.json(ADMIN_TOKEN, &["jobs", "pause", &amqp_job.name]);
    serve.kill9();
    let first_logs = serve.logs();
    let mut serve = start_serve(&env, &data, registry, &tokens, "second");
    serve.wait_healthy().await;
    let kafka_now = serve.job(&kafka_job.name);
    assert_eq!(
        (kafka_now["version"].as_i64(), kafka_now["state"].as_str()),
        (Some(2), Some("running"))
    );
    assert_eq!(
        kafka_now["function_uid"].as_u64(),
        Some(function_uid),
        "the same uid after a restart"
    );
    let amqp_now = serve.job(&amqp_job.name);
    assert_eq!(
        (amqp_now["version"].as_i64(), amqp_now["state"].as_str()),
        (Some(1), Some("paused"))
    );
    produce(&env, &topic, &clicks(3300..3500)).await;
    wait_exactly_once(&env, &kafka_job.prefix, 3500, &serve).await;
    admin.publish(&queue, &clicks(500..600)).await;
    // The paused AMQP job's backlog is its queue's depth.
    wait_for(
        "the paused queue's backlog to show 100",
        Duration::from_secs(60),
        async || serve.job(&amqp_job.name)["status"]["backlog"] == 100,
    )
    .await;
    serve.json(ADMIN_TOKEN, &["jobs", "resume", &amqp_job.name]);
    wait_exactly_once(&env, &amqp_job.prefix, 600, &serve).await;

    // Versions and rollback.
    let versions = serve.json(ADMIN_TOKEN, &["jobs", "versions", &kafka_job.name]);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(versions["versions"][0]["deployed_by"], "ops");
    let rolled = serve.json(ADMIN_TOKEN, &["jobs", "rollback", &kafka_job.name]);
    assert_eq!(rolled["version"], 1);
    let invocations = serve.json(
        ADMIN_TOKEN,
        &["invocations", &kafka_job.name, "--limit", "5"],
    );
    assert!(invocations["invocations"].is_array(), "{invocations}");

    // Every route the OpenAPI document lists that only reads answers as documented.
    let document: Value = http
        .get(format!("{}/v1/openapi.json", serve.url()))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json_or_null()
        .await;
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/jobs/{name}/rollback"));
    for (path, operations) in paths {
        let Some(operation) = operations.get("get") else {
            continue;
        };
        let url = format!("{}{}", serve.url(), path.replace("{name}", &kafka_job.name));
        for token in [None, Some(READ_TOKEN)] {
            let mut request = http.get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let status = request.send().await.unwrap().status().as_u16().to_string();
            assert!(
                operation["responses"].get(&status).is_some(),
                "GET {path} answered {status}, not in the document"
            );
        }
    }

    // The status page: sign in with the read token; both jobs with their state.
    let page = http.get(format!("{}/", serve.url())).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.text().await.unwrap().contains("Sign in"));
    let no_redirect = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = no_redirect
        .post(format!("{}/signin", serve.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={READ_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let overview = http
        .get(format!("{}/", serve.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    let overview = overview.text().await.unwrap();
    for job in [&kafka_job, &amqp_job] {
        assert!(
            overview.contains(&format!("href=\"/jobs/{}\"", job.name)),
            "{overview}"
        );
    }
    assert!(
        overview.contains("<span class=\"running\">running</span>"),
        "{overview}"
    );
    let job_page = http
        .get(format!("{}/jobs/{}", serve.url(), kafka_job.name))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(job_page.status(), 200);
    assert!(
        job_page
            .text()
            .await
            .unwrap()
            .contains("Recent invocations")
    );
    // The cookie opens the pages only, never the API.
    let api_by_cookie = http
        .get(format!("{}/v1/jobs", serve.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api_by_cookie.status(), 401);

    // Delete: gone, no process left.
    for job in [&kafka_job, &amqp_job] {
        serve.json(ADMIN_TOKEN, &["jobs", "delete", &job.name]);
    }
    assert_eq!(
        serve.json(ADMIN_TOKEN, &["jobs", "list"])["jobs"],
        serde_json::json!([])
    );
    wait_no_processes(&kafka_tag, Duration::from_secs(10)).await;
    wait_no_processes(&amqp_tag, Duration::from_secs(10)).await;
    let missing = serve.cli(ADMIN_TOKEN, &["jobs", "show", &kafka_job.name]);
    assert_eq!(missing.status.code(), Some(1));

    // SIGTERM: drains and exits 0.
    assert!(serve.terminate().success(), "logs:\n{}", serve.logs());
    for logs in [first_logs, serve.logs()] {
        assert!(
            !logs.contains(ADMIN_TOKEN) && !logs.contains(READ_TOKEN),
            "a token in the logs"
        );
        assert!(
            logs.contains("deployed") || logs.contains("registry open"),
            "{logs}"
        );
    }
    admin.delete_queue(&queue).await;
}

trait JsonOrNull {
    async fn json_or_null(self) -> Value;
}

impl JsonOrNull for reqwest::Response {
    async fn json_or_null(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_lifecycle_on_sqlite() {
    lifecycle(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_lifecycle_on_postgres() {
    let database = ScratchDatabase::create("sluice_serve");
    lifecycle(Some(database.url())).await;
}
