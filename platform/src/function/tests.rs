//! The runtime against real subprocesses (`sh` and `python3` scripts in a temporary job
//! folder).

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

/// Where tests keep folders a function must reach by path: outside `/tmp` (functions get
/// a private one) and outside the checkout, which may lie in a folder only root can
/// enter (a function runs as its job's own user).
pub(crate) const SHARED_TEST_DIR: &str = "/var/lib/sluice-tests";

#[path = "test_support.rs"]
mod support;
use support::*;

#[tokio::test]
async fn exec_round_trip() {
    let dir = job_dir();
    std::fs::write(
        dir.path().join("double.py"),
        r#"
import json, os, sys
for index, line in enumerate(sys.stdin):
    record = json.loads(line)
    if "n" not in record:
        print(json.dumps({"$error": {"record": index, "message": "no n"}}))
        continue
    print(json.dumps({"n": record["n"] * 2, "mode": os.environ["SLUICE_MODE"]}))
"#,
    )
    .unwrap();
    let spec = spec(&["python3", "double.py"], FunctionMode::Exec);
    let output = run_once(
        dir.path(),
        &spec,
        &batch(&[r#"{"n":1}"#, r#"{"x":0}"#, r#"{"n":21}"#]),
    )
    .await
    .unwrap();
    assert_eq!(output.row_count, 2);
    assert_eq!(
        rows(&output),
        vec![
            serde_json::json!({"n": 2, "mode": "exec"}),
            serde_json::json!({"n": 42, "mode": "exec"})
        ]
    );
    assert_eq!(
        output.errors,
        vec![RecordError {
            record: 1,
            message: "no n".into()
        }]
    );
}

#[tokio::test]
async fn stream_reuses_one_process_across_batches() {
    let dir = job_dir();
    std::fs::write(dir.path().join("echo.py"), STREAM_ECHO).unwrap();
    let spec = spec(&["python3", "./echo.py"], FunctionMode::Stream);
    let mut runner = test_runner("clicks", dir.path(), &spec);

    let mut pids = Vec::new();
    for round in 1..=3_i64 {
        let payloads: Vec<String> = (0..round).map(|v| format!("{{\"v\":{v}}}")).collect();
        let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let output = runner.invoke(&batch(&payloads)).await.unwrap();
        let rows = rows(&output);
        assert_eq!(rows.len() as i64, round);
        assert!(rows.iter().all(|row| row["batch"] == round), "{rows:?}");
        assert_eq!(
            output.init_time.is_some(),
            round == 1,
            "init time only on the cold start"
        );
        pids.extend(rows.iter().map(|row| row["pid"].clone()));
        assert_eq!(runner.warm_instance(), Some("clicks-1"));
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "one process served every batch");
    let process = process_of(&pids[0]);

    runner.shutdown().await;
    assert_eq!(runner.warm_instance(), None);
    assert_gone(process).await;
}

#[tokio::test]
async fn readiness_line_measures_init_time() {
    let dir = job_dir();
    std::fs::write(
        dir.path().join("slow_init.py"),
        format!("import time\ntime.sleep(0.3)\n{STREAM_ECHO}"),
    )
    .unwrap();
    let spec = spec(&["python3", "slow_init.py"], FunctionMode::Stream);
    let mut runner = test_runner("job", dir.path(), &spec);
    let output = runner.invoke(&batch(&[r#"{"v":1}"#])).await.unwrap();
    let init = output.init_time.expect("the instance announced readiness");
    assert!(init >= Duration::from_millis(300), "{init:?}");
    assert!(
        init <= output.duration,
        "{init:?} within {:?}",
        output.duration
    );
    runner.shutdown().await;
}

#[tokio::test]
async fn a_last_line_without_newline_counts() {
    let dir = job_dir();
    let spec = sh(r#"cat >/dev/null; printf '{"a":1}\n{"a":2}'"#);
    let output = run_once(dir.path(), &spec, &batch(&["{}"])).await.unwrap();
    assert_eq!(output.row_count, 2);
    assert_eq!(output.rows, b"{\"a\":1}\n{\"a\":2}\n");
}

#[tokio::test]
async fn a_ten_megabyte_line_is_one_row() {
    let dir = job_dir();
    let spec = spec(
        &[
            "python3",
            "-c",
            r#"import json, sys; sys.stdin.read(); print(json.dumps({"s": "x" * (10 * 1024 * 1024)}))"#,
        ],
        FunctionMode::Exec,
    );
    let output = run_once(dir.path(), &spec, &batch(&["{}"])).await.unwrap();
    assert_eq!(output.row_count, 1);
    assert_eq!(
        output.rows.len(),
        10 * 1024 * 1024 + r#"{"s": ""}"#.len() + 1
    );
}

#[tokio::test]
async fn non_utf8_output_is_a_protocol_error_naming_the_line() {
    let dir = job_dir();
    let spec = sh(r#"printf '{"a":1}\n{"a":"\377"}\n'"#);
    match run_once(dir.path(), &spec, &batch(&["{}"])).await {
        Err(InvokeError::Protocol { line, reason }) => {
            assert_eq!(line, 2);
            assert!(reason.contains("UTF-8"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn error_lines_are_collected_and_out_of_range_records_rejected() {
    let dir = job_dir();
    let ok = sh(r#"cat >/dev/null
echo '{"$error": {"record": 0, "message": "bad date"}}'
echo '{"a": 1}'
echo '{"$error": {"record": 1, "message": "bad id"}}'"#);
    let output = run_once(dir.path(), &ok, &batch(&["{}", "{}"]))
        .await
        .unwrap();
    assert_eq!(output.row_count, 1);
    let messages: Vec<(usize, &str)> = output
        .errors
        .iter()
        .map(|error| (error.record, error.message.as_str()))
        .collect();
    assert_eq!(messages, vec![(0, "bad date"), (1, "bad id")]);

    let out_of_range = sh(r#"cat >/dev/null; echo '{"$error": {"record": 2, "message": "x"}}'"#);
    match run_once(dir.path(), &out_of_range, &batch(&["{}", "{}"])).await {
        Err(InvokeError::Protocol { line: 1, reason }) => {
            assert!(reason.contains("record 2"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_function_that_writes_nothing_returns_no_rows() {
    let dir = job_dir();
    let output = run_once(dir.path(), &sh("cat >/dev/null"), &batch(&["{}", "{}"]))
        .await
        .unwrap();
    assert_eq!(output.row_count, 0);
    assert!(output.rows.is_empty() && output.errors.is_empty());
}

#[tokio::test]
async fn too_much_output_fails_and_kills_the_function() {
    let dir = job_dir();
    let mut spec = sh(r#"echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec yes '{"a":1}'"#);
    spec.max_output = 1 << 20;
    match run_once(dir.path(), &spec, &batch(&["{}"])).await {
        Err(InvokeError::OutputTooLarge { limit }) => assert_eq!(limit, 1 << 20),
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert_gone(read_pid(&dir.path().join("pid"))).await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = job_dir();
    let mut spec = sh(
        "sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) > $OUT/grandchild.pid; echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec sleep 1000",
    );
    spec.timeout = Duration::from_secs(2);
    match run_once(dir.path(), &spec, &batch(&["{}"])).await {
        Err(error @ InvokeError::Timeout { .. }) => assert!(error.is_transient()),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_gone(read_pid(&dir.path().join("grandchild.pid"))).await;
    assert_gone(read_pid(&dir.path().join("pid"))).await;
}

#[tokio::test]
async fn a_crash_reports_the_exit_code_and_stderr() {
    let dir = job_dir();
    let spec = sh("cat >/dev/null; echo 'first line' >&2; echo 'something broke' >&2; exit 3");
    match run_once(dir.path(), &spec, &batch(&["{}"])).await {
        Err(InvokeError::Exit { code, stderr_tail }) => {
            assert_eq!(code, 3);
            assert_eq!(stderr_tail, "first line\nsomething broke");
        }
        other => panic!("expected an exit error, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_instance_dying_mid_batch_is_replaced() {
    let dir = job_dir();
    std::fs::write(dir.path().join("echo.py"), STREAM_ECHO).unwrap();
    let spec = spec(&["python3", "echo.py"], FunctionMode::Stream);
    let mut runner = test_runner("job", dir.path(), &spec);

    let first = runner.invoke(&batch(&[r#"{"v":1}"#])).await.unwrap();
    let first_pid = rows(&first)[0]["pid"].clone();
    let first_process = process_of(&first_pid);

    match runner
        .invoke(&batch(&[r#"{"v":2}"#, r#"{"v":3,"crash":true}"#]))
        .await
    {
        Err(InvokeError::Exit { code, stderr_tail }) => {
            assert_eq!(code, 3);
            assert!(stderr_tail.contains("crashing on purpose"), "{stderr_tail}");
        }
        other => panic!("expected an exit error, got {other:?}"),
    }
    assert_eq!(runner.warm_instance(), None);
    assert_gone(first_process).await;

    let third = runner.invoke(&batch(&[r#"{"v":4}"#])).await.unwrap();
    let third_pid = rows(&third)[0]["pid"].clone();
    assert_ne!(third_pid, first_pid, "a fresh instance took the next batch");
    assert!(third.init_time.is_some());
    assert_eq!(runner.warm_instance(), Some("job-2"));
    runner.shutdown().await;
}

#[tokio::test]
async fn stream_timeout_kills_the_instance_and_the_next_batch_starts_fresh() {
    let dir = job_dir();
    let mut spec = spec(
        &[
            "sh",
            "-c",
            "sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) > $OUT/grandchild.pid; echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec sleep 1000",
        ],
        FunctionMode::Stream,
    );
    spec.timeout = Duration::from_secs(2);
    let mut runner = test_runner("job", dir.path(), &spec);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert_eq!(runner.warm_instance(), None);
    assert_gone(read_pid(&dir.path().join("grandchild.pid"))).await;
    assert_gone(read_pid(&dir.path().join("pid"))).await;
}

#[tokio::test]
async fn the_environment_is_cleared_to_what_the_job_declares() {
    // SAFETY: edition 2024 marks `set_var` unsafe because C code in other threads may
    // read the environment at the same time; the name is unique to this test, and Rust
    // code reading the environment takes std's environment lock.
    unsafe { std::env::set_var("SLUICE_TEST_FAKE_SECRET", "hunter2") };
    let dir = job_dir();
    // `python3` on PATH may be a wrapper script that sets variables of its own; run the
    // interpreter itself.
    let interpreter = python_interpreter();
    let mut spec = spec(
        &[
            interpreter.trim(),
            "-c",
            "import json, os, sys; sys.stdin.read(); print(json.dumps(dict(os.environ)))",
        ],
        FunctionMode::Exec,
    );
    spec.env
        .insert("API_URL".into(), "http://example.test".into());
    let output = run_once(dir.path(), &spec, &batch(&["{}"])).await.unwrap();
    let env = rows(&output).remove(0);
    let env = env.as_object().expect("an object");

    assert!(!env.contains_key("SLUICE_TEST_FAKE_SECRET"), "{env:?}");
    assert_eq!(env["API_URL"], "http://example.test");
    assert_eq!(env["SLUICE_JOB"], "job");
    assert_eq!(env["SLUICE_INSTANCE"], "job-1");
    assert_eq!(env["SLUICE_MODE"], "exec");
    assert_eq!(env["SLUICE_ENCODING"], "ndjson");
    assert!(env.contains_key("PATH"));
    if isolation::isolation().mount_namespaces && isolation::isolation().function_ids.is_ok() {
        assert_eq!(env["HOME"], "/tmp", "its private scratch space");
        assert_eq!(env["TMPDIR"], "/tmp");
    }
    // Python may add LC_CTYPE itself when it coerces a C locale.
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "OUT",
        "LC_CTYPE",
        "API_URL",
        "SLUICE_JOB",
        "SLUICE_INSTANCE",
        "SLUICE_MODE",
        "SLUICE_ENCODING",
    ];
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "leaked into the function: {unexpected:?}"
    );
}

#[tokio::test]
async fn fifty_megabytes_through_cat_do_not_deadlock() {
    let dir = job_dir();
    let record = format!("{{\"pad\":\"{}\"}}", "p".repeat(990));
    let count = 50 * 1024 * 1024 / (record.len() + 1);
    let input = EncodedBatch {
        bytes: format!("{record}\n").repeat(count).into_bytes(),
        records: count,
    };
    let output = run_once(dir.path(), &spec(&["cat"], FunctionMode::Exec), &input)
        .await
        .unwrap();
    assert_eq!(output.row_count, count);
    assert!(
        output.rows == input.bytes,
        "cat returned its input unchanged"
    );
}

#[tokio::test]
async fn a_missing_program_is_not_retryable() {
    let dir = job_dir();
    let spec = spec(&["./no-such-program"], FunctionMode::Exec);
    let error = run_once(dir.path(), &spec, &batch(&["{}"]))
        .await
        .unwrap_err();
    assert!(matches!(error, InvokeError::Spawn { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("./no-such-program"), "{error}");
}

#[tokio::test]
async fn resource_limits_apply_to_the_function() {
    let dir = job_dir();
    let mut spec = sh(
        r#"cat >/dev/null; printf '{"nofile":"%s","core":"%s","cpu":"%s","kib":"%s"}\n' "$(ulimit -n)" "$(ulimit -c)" "$(ulimit -t)" "$(ulimit -v)""#,
    );
    spec.open_files = 64;
    spec.memory = Some(512 << 20);
    spec.cpu_time = Some(Duration::from_millis(2500));
    let memory_cgroup = isolation::isolation()
        .cgroups
        .as_ref()
        .is_some_and(|cgroups| cgroups.limits_memory());
    for use_cgroups in [true, false] {
        let mut runner = test_runner("limits", dir.path(), &spec);
        runner.use_cgroups = use_cgroups;
        let output = runner.invoke(&batch(&["{}"])).await.unwrap();
        // A memory cgroup replaces the address-space limit, which hurts runtimes that
        // reserve large virtual ranges.
        let kib = if use_cgroups && memory_cgroup {
            "unlimited"
        } else {
            "524288"
        };
        assert_eq!(
            rows(&output),
            vec![serde_json::json!({"nofile": "64", "core": "0", "cpu": "3", "kib": kib})],
            "cgroups used: {use_cgroups}"
        );
    }
}

/// The Python block of `docs/function-protocol.md` whose first line names `file`.
fn documented_example(file: &str) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/function-protocol.md"
    ))
    .expect("the protocol document exists");
    doc.split("```python\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.starts_with(&format!("# {file} ")))
        .unwrap_or_else(|| panic!("no example named {file}"))
        .to_owned()
}

#[tokio::test]
async fn the_documented_examples_work() {
    let dir = job_dir();
    for file in ["transform.py", "transform_stream.py"] {
        std::fs::write(dir.path().join(file), documented_example(file)).unwrap();
    }
    let input = batch(&[
        r#"{"user":"7","url":"/a"}"#,
        r#"{"url":"/b"}"#,
        "not json",
        r#"{"user":"9","url":"/c"}"#,
    ]);
    let expected_rows = vec![
        serde_json::json!({"user_id": 7, "url": "/a"}),
        serde_json::json!({"user_id": 9, "url": "/c"}),
    ];
    let failed_records = |output: &FunctionOutput| -> Vec<usize> {
        output.errors.iter().map(|error| error.record).collect()
    };

    let exec = spec(&["python3", "transform.py"], FunctionMode::Exec);
    let output = run_once(dir.path(), &exec, &input).await.unwrap();
    assert_eq!(rows(&output), expected_rows);
    assert_eq!(failed_records(&output), vec![1, 2]);

    let stream = spec(&["python3", "transform_stream.py"], FunctionMode::Stream);
    let mut runner = test_runner("job", dir.path(), &stream);
    for round in 0..2 {
        let output = runner.invoke(&input).await.unwrap();
        assert_eq!(rows(&output), expected_rows);
        assert_eq!(failed_records(&output), vec![1, 2]);
        assert_eq!(output.init_time.is_some(), round == 0);
    }
    runner.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_died_while_idle_is_replaced_before_the_batch() {
    let dir = job_dir();
    std::fs::write(dir.path().join("echo.py"), STREAM_ECHO).unwrap();
    let spec = spec(&["python3", "echo.py"], FunctionMode::Stream);
    let mut runner = test_runner("job", dir.path(), &spec);
    let first = runner.invoke(&batch(&[r#"{"v":1}"#])).await.unwrap();
    let first_pid = rows(&first)[0]["pid"].clone();
    let first_process = process_of(&first_pid);

    let leader = runner.warm_pid().unwrap() as i32;
    kill(
        Pid::from_raw(first_process),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_gone(first_process).await;
    // The instance's leader (with a PID namespace, the relay that ends as the function
    // did) follows a moment later.
    assert_gone(leader).await;

    let second = runner.invoke(&batch(&[r#"{"v":2}"#])).await.unwrap();
    let second_pid = rows(&second)[0]["pid"].clone();
    assert_ne!(first_pid, second_pid);
    assert_eq!(rows(&second)[0]["v"], 2);
    assert_eq!(runner.warm_instance(), Some("job-2"));
    runner.shutdown().await;
}

#[path = "containment_tests.rs"]
mod containment;

#[path = "zygote/tests.rs"]
mod zygote_tests;

#[path = "zygote/sibling_tests.rs"]
mod zygote_sibling_tests;

/// Cold starts of a stream instance (start to its readiness line), spawned (`sh`) and
/// forked from a preloaded Python parent, with a user of its own, its bundle and its
/// namespaces, and without: what the stricter sandbox adds. Measured on demand:
/// `cargo test -p sluice-platform -- --ignored cold_start_overhead --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn cold_start_overhead_of_the_job_user_and_namespaces() {
    const STARTS: usize = 300;
    let dir = job_dir();
    std::fs::write(dir.path().join("ready.py"), STREAM_ECHO).unwrap();
    let spawned = spec(
        &[
            "sh",
            "-c",
            r#"echo '{"$ready": true}'; while read -r line; do [ -z "$line" ] && echo; done"#,
        ],
        FunctionMode::Stream,
    );
    let mut preloaded = spec(&[&python_interpreter(), "ready.py"], FunctionMode::Stream);
    preloaded.preload = vec!["json".into()];
    for (name, spec) in [("spawned", &spawned), ("preloaded", &preloaded)] {
        for isolated in [false, true, false, true] {
            let job = format!("cold-{name}-{isolated}");
            let mut runner = test_runner(&job, dir.path(), spec);
            runner.use_job_user = isolated;
            runner.invoke(&batch(&[r#"{"v":0}"#])).await.unwrap();
            let mut starts = Vec::with_capacity(STARTS);
            for _ in 0..STARTS {
                runner.shutdown().await;
                let output = runner.invoke(&batch(&[r#"{"v":0}"#])).await.unwrap();
                starts.push(output.init_time.unwrap());
            }
            runner.shutdown().await;
            starts.sort();
            println!(
                "{name}, job user and namespaces {isolated}: p50 {:?} p90 {:?} max {:?}",
                starts[STARTS / 2],
                starts[STARTS * 9 / 10],
                starts[STARTS - 1]
            );
        }
    }
}

#[test]
fn every_missing_protection_is_named() {
    let host = isolation::Isolation {
        cgroups: None,
        network_namespaces: false,
        drop_capabilities: None,
        function_ids: Err("the platform does not run as root".into()),
        mount_namespaces: false,
        pid_namespaces: false,
        user_namespaces: false,
        syscall_filter: Err("no seccomp in this kernel".into()),
    };
    let mut spec = sh("cat");
    let missing = host.missing(&spec).join("\n");
    for protection in [
        "a user of its own (the platform does not run as root)",
        "a mount namespace",
        "a PID namespace",
        "a network namespace",
        "dropping capabilities",
        "a system call filter (no seccomp in this kernel)",
        "cgroups",
    ] {
        assert!(missing.contains(protection), "{protection} in {missing}");
    }
    spec.network = true;
    assert_eq!(host.missing(&spec).len(), 6, "no network namespace needed");
    spec.preload = vec!["json".into()];
    let missing = host.missing(&spec).join("\n");
    assert!(
        missing.contains("a PID namespace and a private /tmp per preloaded instance"),
        "{missing}"
    );
}

/// A strict job on a host that cannot isolate it fails for good: a retryable error would
/// have the pipeline retry the batch, then split it and send every record to the
/// dead-letter destination, for a fault of the host and not of the data.
#[test]
fn strict_isolation_the_host_cannot_give_is_a_permanent_error() {
    let host = isolation::Isolation {
        cgroups: None,
        network_namespaces: true,
        drop_capabilities: Some(40),
        function_ids: Err("the platform does not run as root".into()),
        mount_namespaces: false,
        pid_namespaces: false,
        user_namespaces: false,
        syscall_filter: Err("no seccomp in this kernel".into()),
    };
    let mut spec = sh("cat");
    assert_eq!(spec.isolation, crate::spec::IsolationLevel::Strict);
    let error = host.refuse_unless_allowed(&spec).unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    for part in [
        "function.isolation = \"strict\" and this host cannot give the function",
        "a user of its own (the platform does not run as root)",
        "a PID namespace",
        "function.isolation = \"best_effort\"",
        "retrying cannot help",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
    spec.isolation = crate::spec::IsolationLevel::BestEffort;
    assert!(host.refuse_unless_allowed(&spec).is_ok());
}
