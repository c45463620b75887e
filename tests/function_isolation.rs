//! Function isolation through the `sluice` binary: platform processes that start at the
//! same moment each get working cgroups for their functions, and a function runs as a
//! user of its own, never root.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::JobToml;
use common::cli::invokable_job;

/// A job whose function reports the pids cgroup it runs in and its user.
fn start_race_job() -> JobToml {
    invokable_job(
        "start-race",
        &[
            "sh",
            "-c",
            r#"cat >/dev/null; printf '{"cgroup": "%s", "uid": %s}\n' "$(grep pids /proc/self/cgroup)" "$(id -u)""#,
        ],
        r#"{ cgroup = "utf8", uid = "int64" }"#,
    )
    .set("function", "max_processes", 16_i64)
}

/// [`start_race_job`] with best-effort isolation.
fn best_effort_job() -> JobToml {
    start_race_job().set("function", "isolation", "best_effort")
}

#[test]
fn two_platform_processes_starting_at_once_both_get_cgroups_ten_times() {
    let pids_hierarchy = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|line| line.split(':').nth(1) == Some("pids"));
    let dir = tempfile::tempdir().unwrap();
    start_race_job().write_in(dir.path());
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, "{\"id\": 1}\n").unwrap();
    for round in 0..10 {
        let start = || {
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["invoke", dir.path().to_str().unwrap(), "--input"])
                .arg(&input)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let both = [start(), start()];
        for child in both {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}: {stderr}");
            assert!(
                !stderr.contains("cgroups are not usable"),
                "round {round}: cgroups switched off: {stderr}"
            );
            let row: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            if pids_hierarchy {
                let cgroup = row["cgroup"].as_str().unwrap();
                assert!(
                    cgroup.contains("/sluice/start-race/"),
                    "round {round}: the function ran outside its cgroup: {cgroup}"
                );
            }
            assert_ne!(row["uid"], 0, "round {round}: the function ran as root");
        }
    }
}

/// A preloaded Python job that accepts what the host gives.
fn preloaded_job() -> JobToml {
    JobToml::new("preloaded")
        .kafka("127.0.0.1:9092", "unused")
        .set("function", "command", ["python3", "transform.py"])
        .set("function", "preload", ["json"])
        .set("function", "isolation", "best_effort")
        .output("out")
        .schema("{ v = \"int64\" }")
}

/// `sluice validate` run by a user that is not root, so the host cannot give a function
/// a user of its own (nor namespaces): the strict default refuses, best effort accepts,
/// and both name what is missing.
#[test]
fn validate_names_missing_protections_and_strict_refuses() {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all("/var/lib/sluice-tests").unwrap();
    let dir = tempfile::tempdir_in("/var/lib/sluice-tests").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let job = dir.path().join("job.toml");
    // A copy of the binary the other user can reach (the checkout may be root's only).
    let binary = dir.path().join("sluice");
    std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let validate_as_nobody = || {
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o644)).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&binary)
            .args(["validate", dir.path().to_str().unwrap()])
            .env("SLUICE_DATA_DIR", dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    start_race_job().write_in(dir.path());
    let strict = validate_as_nobody();
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{stderr}");
    assert!(
        stderr.contains("this host cannot give the function a user of its own"),
        "{stderr}"
    );
    assert!(stderr.contains("\"strict\" refuses"), "{stderr}");

    best_effort_job().write_in(dir.path());
    let best_effort = validate_as_nobody();
    let stderr = String::from_utf8_lossy(&best_effort.stderr);
    assert!(best_effort.status.success(), "{stderr}");
    assert!(stderr.contains("a mount namespace"), "{stderr}");

    // A preloaded job also names what its forked instances would lack.
    std::fs::write(dir.path().join("transform.py"), "").unwrap();
    std::fs::write(&job, preloaded_job().to_toml()).unwrap();
    let preloaded = validate_as_nobody();
    let stderr = String::from_utf8_lossy(&preloaded.stderr);
    assert!(preloaded.status.success(), "{stderr}");
    assert!(
        stderr.contains("a PID namespace and a private /tmp per preloaded instance"),
        "{stderr}"
    );
}

/// A function that looks for the platform's secret in every environment it can read and
/// sends SIGTERM to its parent, the platform. In a PID namespace of its own its parent is
/// out of sight (`$PPID` is 0, and `kill 0` would signal its own process group): that
/// counts as refused.
fn snoop_job() -> JobToml {
    invokable_job(
        "snoop",
        &[
            "sh",
            "-c",
            r#"cat >/dev/null; found=$(grep -l -a fake-platform-secret /proc/[0-9]*/environ 2>/dev/null | wc -l); if [ $PPID -ne 0 ]; then kill -TERM $PPID 2>/dev/null; else false; fi; printf '{"found": %s, "kill": %s}\n' "$found" "$?""#,
        ],
        r#"{ found = "int64", kill = "int64" }"#,
    )
}

#[test]
fn a_function_cannot_read_the_platforms_environment_or_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    snoop_job().write_in(dir.path());
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, "{\"id\": 1}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["invoke", dir.path().to_str().unwrap(), "--input"])
        .arg(&input)
        .env("AWS_SECRET_ACCESS_KEY", "fake-platform-secret")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the platform was stopped: {stderr}");
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(row["found"], 0, "environments holding the secret: {row}");
    assert_ne!(
        row["kill"], 0,
        "SIGTERM to the platform went through: {row}"
    );
}

/// `SLUICE_FUNCTION_UIDS=off`: the operator switches users off; a strict job refuses to
/// run its function, a best-effort one runs it as the platform's user.
#[test]
fn users_switched_off_run_only_best_effort_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, "{\"id\": 1}\n").unwrap();
    let invoke = |job: JobToml| {
        job.write_in(dir.path());
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["invoke", dir.path().to_str().unwrap(), "--input"])
            .arg(&input)
            .env("SLUICE_FUNCTION_UIDS", "off")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let strict = invoke(start_race_job());
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "{stderr}");
    assert!(
        stderr.contains("function.isolation = \"strict\"") && stderr.contains("switched off"),
        "{stderr}"
    );

    let best_effort = invoke(best_effort_job());
    let stderr = String::from_utf8_lossy(&best_effort.stderr);
    assert!(best_effort.status.success(), "{stderr}");
    let row: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&best_effort.stdout).trim()).unwrap();
    assert_eq!(row["uid"], 0, "the platform's own user: {row}");
}
