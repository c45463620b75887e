//! The status page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by the test when missing) signs
//! in with a read token, sees both jobs with their state, opens a job page and saves a
//! screenshot that must not be blank.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::amqp::AmqpAdmin;
use common::serve::Serve;
use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "page-admin-81c2";
const READ: &str = "page-read-5d0a";

/// Installs Chromium and its WebDriver from Debian's packages if they are missing.
fn chromedriver() -> &'static str {
    if Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "chromium", "chromium-driver"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .unwrap()
        };
        let mut installed = install();
        if !installed.success() {
            // A fresh machine may not have read the package lists yet.
            let updated = Command::new("apt-get").args(["update", "-q"]).status();
            assert!(
                updated.is_ok_and(|status| status.success()),
                "apt-get update"
            );
            installed = install();
        }
        assert!(
            installed.success(),
            "apt-get install chromium chromium-driver"
        );
    }
    "chromedriver"
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A W3C WebDriver session.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self
            .http
            .request(method, format!("{}{path}", self.session))
            .json_body(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let value: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(status.is_success(), "webdriver {path}: {value}");
        value["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The page source once it satisfies `ready` (a click's navigation may still be
    /// under way when the click returns); fails with the last source after 30 s.
    async fn source_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let source = self.source().await;
            if ready(&source) {
                return source;
            }
            assert!(std::time::Instant::now() < deadline, "{source}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        let encoded = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap())
            .unwrap()
    }
}

trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        if body.is_null() {
            self
        } else {
            self.header("content-type", "application/json")
                .body(body.to_string())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_and_sees_both_jobs() {
    let env = env();
    let driver_binary = chromedriver();
    let work = tempfile::tempdir().unwrap();
    let serve = Serve::with_tokens(
        &env,
        work.path(),
        &format!("ops:admin:{ADMIN}\nviewer:read:{READ}\n"),
    )
    .await;
    let server = serve.url();
    let topic = unique("page-clicks");
    create_topic(&env, &topic, 1).await;
    let kafka_job = JobDir::new(&env, &topic, |job| {
        job.set("function", "command", ["python3", "transform.py"])
    });
    let admin = AmqpAdmin::connect(&env).await;
    let queue = unique("page-clicks-amqp");
    admin.declare_queue(&queue).await;
    let amqp_job = JobDir::new_amqp(&env, &queue, |job| {
        job.set("function", "command", ["python3", "transform.py"])
    });
    for job in [&kafka_job, &amqp_job] {
        serve.deploy_ok(ADMIN, job.path(), &[]);
    }
    assert!(
        serve
            .cli(ADMIN, &["jobs", "pause", &amqp_job.name])
            .status
            .success()
    );

    let driver_port = free_port();
    let _driver = Killed(
        Command::new(driver_binary)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let driver = format!("http://127.0.0.1:{driver_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{driver}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,800", "--no-proxy-server"]
    }}}});
    let created: Value = serde_json::from_str(
        &http
            .post(format!("{driver}/session"))
            .json_body(&capabilities)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let browser = Browser {
        http: http.clone(),
        session: format!("{driver}/session/{session}"),
    };

    browser.go("about:blank").await;
    let blank = browser.screenshot().await;
    browser.go(&format!("{server}/")).await;
    assert!(browser.source().await.contains("Sign in"));
    let input = browser.element("input[name=token]").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{input}/value"),
            json!({"text": READ}),
        )
        .await;
    let submit = browser.element("button[type=submit]").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{submit}/click"),
            json!({}),
        )
        .await;
    let overview = browser
        .source_when(|page| page.contains(&kafka_job.name) && page.contains(&amqp_job.name))
        .await;
    for job in [&kafka_job, &amqp_job] {
        assert!(overview.contains(&job.name), "{overview}");
    }
    assert!(
        overview.contains(">running<") && overview.contains(">paused<"),
        "{overview}"
    );

    let link = browser
        .element(&format!("a[href=\"/jobs/{}\"]", kafka_job.name))
        .await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{link}/click"),
            json!({}),
        )
        .await;
    let job_page = browser
        .source_when(|page| page.contains("Recent invocations"))
        .await;
    assert!(job_page.contains("Recent invocations"), "{job_page}");
    let screenshot = browser.screenshot().await;
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        screenshot.len() > 2 * blank.len(),
        "the screenshot ({} bytes) looks blank next to about:blank ({} bytes)",
        screenshot.len(),
        blank.len()
    );
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&saved, &screenshot).unwrap();
    browser.call(reqwest::Method::DELETE, "", Value::Null).await;
    admin.delete_queue(&queue).await;
}
