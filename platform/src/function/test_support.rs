//! Helpers of the function runtime's unit tests: job folders a function's own user can
//! write to, runners, batches, and waiting for processes to be gone.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::Value;
use sluice_connectors::{Event, Origin};

use super::*;

/// A job folder for a test, in [`SHARED_TEST_DIR`] and writable by every user, so that
/// a function, which sees the folder only through its read-only bundle, can still leave
/// pid files in it through `$OUT`.
pub(super) fn job_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let base = Path::new(SHARED_TEST_DIR);
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The Python interpreter itself (`python3` on PATH may be a wrapper script that sets
/// variables of its own), when every user may run it; else the system's. Functions run
/// as their job's own user, who cannot enter root's home, where a per-user Python lives.
pub(super) fn python_interpreter() -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let found = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let open_to_all = Path::new(&found).ancestors().skip(1).all(|dir| {
        std::fs::metadata(dir).is_ok_and(|metadata| metadata.permissions().mode() & 0o001 != 0)
    });
    if open_to_all {
        found
    } else {
        "/usr/bin/python3".to_owned()
    }
}

/// A runner whose function finds the test's job folder in `$OUT`.
pub(super) fn test_runner(job: &str, dir: &Path, spec: &FunctionSpec) -> FunctionRunner {
    let mut spec = spec.clone();
    spec.env
        .entry("OUT".into())
        .or_insert_with(|| dir.display().to_string());
    FunctionRunner::new(job, dir, &spec)
}

pub(super) fn sh(script: &str) -> FunctionSpec {
    spec(&["sh", "-c", script], FunctionMode::Exec)
}

pub(super) fn batch(payloads: &[&str]) -> EncodedBatch {
    let events: Vec<Event> = payloads
        .iter()
        .enumerate()
        .map(|(line, payload)| {
            Event::from_payload(
                Bytes::copy_from_slice(payload.as_bytes()),
                Origin::Sample {
                    line: line as u64 + 1,
                },
            )
        })
        .collect();
    encode_batch(&events, InputMode::Value)
}

pub(super) fn rows(output: &FunctionOutput) -> Vec<Value> {
    let text = std::str::from_utf8(&output.rows).expect("rows are UTF-8");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each row is JSON"))
        .collect()
}

pub(super) async fn run_once(
    dir: &Path,
    spec: &FunctionSpec,
    batch: &EncodedBatch,
) -> Result<FunctionOutput, InvokeError> {
    test_runner("job", dir, spec).invoke(batch).await
}

/// A pid no process has (above any `pid_max`): what a process a function named stands
/// for once it is gone.
pub(super) const NO_PROCESS: i32 = i32::MAX;

/// The platform's pid of a process a function named as `<pid> <pid namespace>` (its
/// `getpid()` and `readlink /proc/self/ns/pid`, then anything, e.g. its start time): in
/// a PID namespace of its own, a function's pids are not the platform's. A bare `<pid>`
/// is taken as it is. `None` when no such process runs.
pub(super) fn host_pid(tag: &str) -> Option<i32> {
    let mut parts = tag.split_whitespace();
    let pid: i32 = parts.next()?.parse().ok()?;
    let Some(namespace) = parts.next() else {
        return Some(pid);
    };
    let namespace_of = |process: &str| {
        std::fs::read_link(format!("/proc/{process}/ns/pid"))
            .ok()
            .and_then(|link| link.to_str().map(str::to_owned))
    };
    if namespace_of("self").as_deref() == Some(namespace) {
        return Some(pid);
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|host| {
            namespace_of(&host.to_string()).as_deref() == Some(namespace)
                && std::fs::read_to_string(format!("/proc/{host}/status")).is_ok_and(|status| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix("NSpid:"))
                        .and_then(|pids| pids.split_whitespace().last())
                        .is_some_and(|inner| inner == pid.to_string())
                })
        })
}

/// The platform's pid of the process a row's `pid` tag names (see [`host_pid`]), or
/// [`NO_PROCESS`] when it is gone.
pub(super) fn process_of(tag: &Value) -> i32 {
    let tag = tag.as_str().unwrap_or_else(|| panic!("a pid tag: {tag}"));
    host_pid(tag).unwrap_or(NO_PROCESS)
}

/// The platform's pid of the process a function named in the file `path` (see
/// [`host_pid`]), or [`NO_PROCESS`] when it is gone.
pub(super) fn read_pid(path: &Path) -> i32 {
    let tag = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    assert!(
        tag.split_whitespace()
            .next()
            .is_some_and(|pid| pid.parse::<i32>().is_ok()),
        "a pid in {tag:?}"
    );
    host_pid(&tag).unwrap_or(NO_PROCESS)
}

/// Whether `pid` no longer runs. A zombie counts as gone: it runs no code, and whoever
/// adopted it may reap it late.
pub(super) fn is_gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Waits (bounded) until `pid` is gone; SIGKILL delivery is asynchronous.
pub(super) async fn assert_gone(pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !is_gone(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
