//! The OpenAPI document of `sluice serve` against a schema-based API fuzzer
//! (schemathesis from PyPI, installed into a virtualenv under the target folder on first
//! use): no 5xx, and no status, content type or body that contradicts the document.
//!
//! One check is left out: "a schema-valid request must be accepted". A bundle is bytes
//! in the document, but only a real `.tar.gz` of a valid job folder is accepted; the
//! document cannot say that, and the 400 it answers is documented.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::serve::Serve;
use common::*;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const TOKEN: &str = "fuzz-admin-3b9d";

/// A virtualenv with schemathesis, made once per target folder.
fn schemathesis() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let binary = venv.join("bin/schemathesis");
    if !binary.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", SCHEMATHESIS])
            .status()
            .unwrap();
        assert!(installed.success(), "pip install {SCHEMATHESIS}");
    }
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_its_openapi_document_under_fuzzing() {
    let env = env();
    let fuzzer = schemathesis();
    let work = tempfile::tempdir().unwrap();
    // The job's dead letters are read from the S3 endpoint (the harness passes its
    // credentials).
    let mut serve = Serve::with_tokens(&env, work.path(), &format!("fuzz:admin:{TOKEN}\n")).await;
    let server = serve.url();
    // One job, so the job routes have something to find (its topic never fills).
    let job = JobDir::new(&env, &unique("fuzz-topic"), |job| {
        job.set("function", "command", ["python3", "transform.py"])
    });
    serve.deploy_ok(TOKEN, job.path(), &["--no-wait"]);

    let document = work.path().join("openapi.json");
    let body = serve
        .get_text(
            "/v1/openapi.json",
            ("authorization", &format!("Bearer {TOKEN}")),
        )
        .await;
    std::fs::write(&document, body).unwrap();
    let fuzzed = Command::new(&fuzzer)
        .arg("run")
        .arg(&document)
        .args(["--url", &server])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "40", "--seed", "1"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        // `?follow=true` streams until the client goes away, which a fuzzer waiting for
        // the end of each answer cannot do; tests/serve_invocations.rs covers the route.
        .args(["--exclude-path", "/v1/jobs/{name}/logs"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&fuzzed.stdout);
    assert!(fuzzed.status.success(), "schemathesis failed:\n{report}");
    assert!(report.contains("passed"), "{report}");
    serve.kill9();
    let logs = serve.logs();
    assert!(!logs.contains(TOKEN), "the token is in the logs");
}
