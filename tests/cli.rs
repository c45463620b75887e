//! The CLI without any broker or store: `validate` and `invoke`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::JobToml;
use common::cli::{invokable_job, sluice_cli as sluice};

#[test]
fn validate_accepts_the_example_job() {
    let out = sluice(&["validate", "jobs/clickstream"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn validate_names_the_file_and_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    invokable_job("Bad Name", &["python3", "f.py"], r#"{ id = "int65" }"#)
        .set("function", "timeout", "soon")
        .write_in(dir.path());
    let out = sluice(&["validate", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = dir.path().join("job.toml");
    for field in ["name", "function.timeout", "output.schema.id"] {
        let expected = format!("{}: {field}: ", file.display());
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn invoke_runs_the_example_function_on_its_sample_events() {
    let out = sluice(&[
        "invoke",
        "jobs/clickstream",
        "--input",
        "jobs/clickstream/events.ndjson",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0]["event_id"], "e-0001");
    assert_eq!(
        rows[0]["domain"], "shop.example.com",
        "transformed: host lower-cased"
    );
    assert!(rows[0]["ts"].as_str().unwrap().ends_with('Z'));
    assert!(
        stderr.contains("21 records in, 20 rows out, 1 rejected"),
        "{stderr}"
    );
    assert!(stderr.contains("event_date=2026-11-27: 7 rows"), "{stderr}");
    assert!(stderr.contains("rejected line 21: ValueError"), "{stderr}");
}

#[test]
fn invoke_reports_a_function_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    invokable_job(
        "broken",
        &["sh", "-c", "echo 'no such column' >&2; exit 4"],
        r#"{ id = "int64" }"#,
    )
    .write_in(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["invoke", dir.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"id\": 1}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sample lines 1..=1"), "{stderr}");
    assert!(stderr.contains("exited with code 4"), "{stderr}");
    assert!(stderr.contains("no such column"), "{stderr}");
    assert_eq!(
        stderr.matches("exited with code 4").count(),
        1,
        "each cause is printed once:\n{stderr}"
    );
}

#[test]
fn run_warns_when_the_status_endpoint_listens_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inbox")).unwrap();
    JobToml::new("exposed")
        .bucket("inbox")
        .set("function", "command", ["cat"])
        .output("out")
        .schema(r#"{ id = "int64" }"#)
        .write_in(dir.path());
    let job = dir.path().to_str().unwrap();
    for (listen, warned) in [("0.0.0.0:0", true), ("127.0.0.1:0", false)] {
        let out = sluice(&["run", "--once", "--http", listen, job]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            stderr.contains("beyond loopback without authentication"),
            warned,
            "{listen}:\n{stderr}"
        );
    }
}

#[test]
fn run_never_logs_a_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inbox")).unwrap();
    JobToml::new("masked")
        .bucket("inbox")
        .set("function", "command", ["cat"])
        .set("function.env", "UPSTREAM", "${CLI_TEST_API_TOKEN}")
        .output("out-${CLI_TEST_API_TOKEN}")
        .schema(r#"{ id = "int64" }"#)
        .write_in(dir.path());
    let secret = "tok-7f3a9c2e1b5d";
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--once", dir.path().to_str().unwrap()])
        .env("CLI_TEST_API_TOKEN", secret)
        .env("SLUICE_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("starting job"), "{stderr}");
    assert!(
        stderr.contains("out-***"),
        "the output folder is shown masked:\n{stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");
}
