//! Function isolation through the `sluice` binary: platform processes that start at the
//! same moment each get working cgroups for their functions, and a function runs as a
//! user of its own, never root.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

/// A job whose function reports the pids cgroup it runs in and its user.
const JOB: &str = r#"name = "start-race"
[trigger.kafka]
brokers = "127.0.0.1:9092"
topic = "unused"
[function]
command = ["sh", "-c", "cat >/dev/null; printf '{\"cgroup\": \"%s\", \"uid\": %s}\\n' \"$(grep pids /proc/self/cgroup)\" \"$(id -u)\""]
max_processes = 16
[output]
url = "out"
schema = { cgroup = "utf8", uid = "int64" }
"#;

#[test]
fn two_platform_processes_starting_at_once_both_get_cgroups_ten_times() {
    let pids_hierarchy = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .any(|line| line.split(':').nth(1) == Some("pids"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), JOB).unwrap();
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
