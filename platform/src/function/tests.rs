//! The runtime against real subprocesses (`sh` and `python3` scripts in a temporary job
//! folder): the shared fixtures here, the tests by concept in the modules below (output,
//! lifecycle, sandbox, containment, arrow, preload). What the sandbox costs at start is
//! measured by `bench/sandbox_cold_start.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::Value;

use super::*;
use crate::spec::{Encoding, InputMode, IsolationLevel};
use sluice_connectors::Classify as _;

const STREAM_ECHO: &str = r#"
import json, os, sys

print(json.dumps({"$ready": True}), flush=True)
batch, batches = [], 0
for line in sys.stdin:
    line = line.rstrip("\n")
    if line:
        batch.append(json.loads(line))
        continue
    batches += 1
    for record in batch:
        if record.get("crash"):
            print("crashing on purpose", file=sys.stderr, flush=True)
            sys.exit(3)
        # pid, PID namespace and start time: unique, where a namespace may reuse both.
        started = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]
        pid = "%d %s %s" % (os.getpid(), os.readlink("/proc/self/ns/pid"), started)
        print(json.dumps({"pid": pid, "batch": batches, "v": record["v"]}))
    print(flush=True)
    batch = []
"#;

fn spec(command: &[&str], mode: FunctionMode) -> FunctionSpec {
    FunctionSpec {
        command: command.iter().map(|part| part.to_string()).collect(),
        mode,
        encoding: Encoding::Ndjson,
        input: InputMode::Value,
        input_schema: None,
        timeout: Duration::from_secs(60),
        memory: None,
        open_files: 1024,
        cpu_time: None,
        max_output: 256 << 20,
        max_processes: 256,
        network: false,
        env: BTreeMap::new(),
        max_attempts: 1,
        retry_backoff: Duration::from_secs(1),
        max_record_age: None,
        preload: Vec::new(),
        isolation: IsolationLevel::Strict,
    }
}

pub(crate) use crate::testing::SHARED_TEST_DIR;

#[path = "test_support.rs"]
mod support;
use support::*;

mod output;

mod lifecycle;

mod sandbox_rules;

mod containment;

mod arrow;

#[path = "zygote/tests.rs"]
mod zygote_tests;

#[path = "zygote/tests/sibling.rs"]
mod zygote_sibling;
