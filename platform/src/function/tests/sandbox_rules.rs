//! What the sandbox gives every function: a cleared environment, resource limits, and,
//! where the host cannot give a protection, its name and the refusal of a strict job.

use super::*;

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
