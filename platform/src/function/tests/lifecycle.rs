//! Instances over their lives: a warm stream instance reused and its init time measured,
//! crashes, timeouts and deaths (mid-batch or idle) ending the instance and everything it
//! started, a fresh instance for the next batch, and a missing program.

use super::*;

/// A stream runner for job `job` over [`STREAM_ECHO`] that has answered one batch: the
/// runner, the instance's tag (pid, namespace, start time) and its process id.
async fn warm_echo(dir: &Path) -> (FunctionRunner, Value, i32) {
    std::fs::write(dir.join("echo.py"), STREAM_ECHO).unwrap();
    let spec = spec(&["python3", "echo.py"], FunctionMode::Stream);
    let mut runner = test_runner("job", dir, &spec);
    let first = runner.invoke(&batch(&[r#"{"v":1}"#])).await.unwrap();
    let first_pid = rows(&first)[0]["pid"].clone();
    let first_process = process_of(&first_pid);
    (runner, first_pid, first_process)
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
    let (mut runner, first_pid, first_process) = warm_echo(dir.path()).await;

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
async fn an_instance_that_died_while_idle_is_replaced_before_the_batch() {
    let dir = job_dir();
    let (mut runner, first_pid, first_process) = warm_echo(dir.path()).await;

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

/// A spawned instance's relay (its leader) and its namespace's init are the small relay
/// program, not forks of the platform: a fork would keep, for the instance's whole life,
/// every page of the platform's memory written since the fork.
#[tokio::test]
async fn a_spawned_instance_keeps_no_copy_of_the_platform_memory() {
    let dir = job_dir();
    let (mut runner, _, function) = warm_echo(dir.path()).await;
    let leader = runner.warm_pid().unwrap();
    let comm = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim()
            .to_string()
    };
    let resident_kib = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
    };
    assert_eq!(comm(leader), "sluice-relay");
    let children =
        std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children")).unwrap();
    let children: Vec<u32> = children
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(children.len(), 2, "init and the function: {children:?}");
    assert!(children.contains(&(function as u32)), "{children:?}");
    let init = children
        .into_iter()
        .find(|pid| *pid != function as u32)
        .unwrap();
    assert_eq!(comm(init), "sluice-ns-init");
    let platform = resident_kib("self");
    for pid in [leader, init] {
        let relay = resident_kib(&pid.to_string());
        assert!(
            relay < 8 * 1024 && relay < platform / 4,
            "{} holds {relay} KiB (the platform {platform} KiB)",
            comm(pid)
        );
    }
    runner.shutdown().await;
}
