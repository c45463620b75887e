//! The `sluice` CLI for tests that need no service: run from the repository's root, and
//! the small jobs `validate` and `invoke` are given.

use std::process::{Command, Output, Stdio};

use super::{JobToml, sluice_binary};

/// Runs `sluice ARGS…` from the repository's root to its end, with nothing on stdin.
pub fn sluice_cli(args: &[&str]) -> Output {
    Command::new(sluice_binary())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A job for `sluice invoke` and `validate`: `command` as its function and `schema` as
/// its output's, on a Kafka trigger that neither verb connects to.
pub fn invokable_job(name: &str, command: &[&str], schema: &str) -> JobToml {
    JobToml::new(name)
        .kafka("127.0.0.1:9092", "t")
        .set("function", "command", command)
        .output("out")
        .schema(schema)
}
