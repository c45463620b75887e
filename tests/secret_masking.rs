//! A secret from a `${NAME}` in the function's environment never leaves the function
//! through the platform: two Kafka jobs run side by side in one `sluice run --http`. One
//! prints its token on stderr, rejects a record with the token in the message (a record
//! whose payload holds the token itself) and crashes on another after printing the token
//! again; the other's preload module prints the token and fails to import, which stops
//! that job. The captured log, `/status` and the dead letters hold no token; the dead
//! letters keep their payloads byte for byte.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const SECRET: &str = "tok-e2e-6a0d93f1c7b5";

/// Prints the token, crashes on a `"crash"` record (token on stderr), rejects a
/// `"token"` record with the token in the message, passes the others on as rows.
const LEAKY_SCRIPT: &str = r#"echo "using token $TOKEN" >&2
i=0
while IFS= read -r line; do
  case "$line" in
    *'"crash"'*) echo "cannot use $TOKEN here" >&2; exit 1 ;;
    *'"token"'*) echo "{\"\$error\": {\"record\": $i, \"message\": \"token $TOKEN refused\"}}" ;;
    *) echo "{\"event_id\": \"e$i\", \"event_date\": \"2026-01-01\"}" ;;
  esac
  i=$((i+1))
done
"#;

/// A preload module that prints the token, then fails with it in the exception.
const LEAKY_MODULE: &str = r#"import os, sys
sys.stderr.write("preloading with token " + os.environ["TOKEN"] + "\n")
sys.stderr.flush()
raise RuntimeError("upstream refused token " + os.environ["TOKEN"])
"#;

/// The function's environment: the token, by reference to the platform's.
fn with_token(job: JobToml) -> JobToml {
    job.set("function.env", "TOKEN", "${E2E_MASK_API_TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_function_prints_reaches_no_log_no_status_and_no_dead_letter() {
    let env = env();
    let topic = unique("secret-mask");
    create_topic(&env, &topic, 1).await;
    let leaky = JobDir::new(&env, &topic, |job| {
        with_token(
            job.set("function", "command", ["sh", "leaky.sh"])
                .set("function", "max_attempts", 2_i64)
                .set("function", "retry_backoff", "10ms"),
        )
    });
    leaky.write("leaky.sh", LEAKY_SCRIPT);
    let broken = JobDir::new(&env, &topic, |job| {
        with_token(
            job.set("function", "command", ["python3", "transform.py"])
                .set("function", "mode", "stream")
                .set("function", "preload", ["leaky_module"]),
        )
    });
    broken.write("leaky_module.py", LEAKY_MODULE);
    let token_payload = format!(r#"{{"n":3,"token":"{SECRET}"}}"#);
    let payloads: Vec<(String, String)> = (0..10)
        .map(|n| {
            let payload = match n {
                3 => token_payload.clone(),
                6 => r#"{"n":6,"crash":true}"#.to_owned(),
                n => format!(r#"{{"n":{n}}}"#),
            };
            (format!("k{n}"), payload)
        })
        .collect();
    produce(&env, &topic, &payloads).await;

    let port = free_port();
    let log = leaky.path().join("sluice.log");
    let http = format!("127.0.0.1:{port}");
    let mut sluice = Sluice::spawn(
        &env,
        &[
            "run",
            leaky.path().to_str().unwrap(),
            broken.path().to_str().unwrap(),
            "--http",
            &http,
        ],
        &[("SLUICE_LOG", "debug"), ("E2E_MASK_API_TOKEN", SECRET)],
        log,
    );

    // The leaky job dead-letters its two records; the broken one fails on its preload.
    let mut status = String::new();
    wait_for(
        "two dead letters and a failed job on /status",
        Duration::from_secs(120),
        async || {
            sluice.assert_running();
            let Some(body) = http_get(port, "/status").await else {
                return false;
            };
            status = body;
            let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&status) else {
                return false;
            };
            let job = |name: &str| {
                parsed["jobs"]
                    .as_array()
                    .and_then(|jobs| jobs.iter().find(|job| job["job"] == name).cloned())
                    .unwrap_or_default()
            };
            job(&leaky.name)["stats"]["dead_letters"].as_u64() == Some(2)
                && job(&broken.name)["state"] == "failed"
        },
    )
    .await;
    assert!(
        !status.contains(SECRET),
        "/status shows the secret: {status}"
    );
    assert!(
        status.contains("preloading with token ***"),
        "the failed job's reason quotes the masked stderr: {status}"
    );

    sluice.terminate();
    let exit = sluice.wait(Duration::from_secs(60));
    let logs = sluice.logs();
    assert!(!exit.success(), "one job failed: {logs}");
    assert!(!logs.contains(SECRET), "the log shows the secret:\n{logs}");
    assert!(
        logs.contains("using token ***") && logs.contains("preloading with token ***"),
        "the functions' stderr is logged, masked:\n{logs}"
    );

    let letters = read_dead_letters(&env, &leaky.prefix).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        let error = letter["error"].as_str().unwrap();
        assert!(!error.contains(SECRET), "{error}");
    }
    let rejected = letters
        .iter()
        .find(|letter| letter["error"] == "token *** refused")
        .unwrap_or_else(|| panic!("the rejection, masked: {letters:?}"));
    assert_eq!(
        rejected["payload"].as_str().unwrap().as_bytes(),
        token_payload.as_bytes(),
        "the payload is kept byte for byte, secret included"
    );
    let crashed = letters
        .iter()
        .find(|letter| letter["payload"] == r#"{"n":6,"crash":true}"#)
        .unwrap_or_else(|| panic!("the crash: {letters:?}"));
    let error = crashed["error"].as_str().unwrap();
    assert!(error.contains("cannot use *** here"), "{error}");
}
