//! Preloaded instances of one job against each other: forked from one zygote, each still
//! gets a PID namespace and a private `/tmp` of its own, so it cannot see or signal its
//! siblings or the zygote, nor read what a sibling left in its `/tmp`. Real `python3`
//! processes in a temporary job folder.

use super::*;

/// A stream function that, per record, may write `/tmp/sibling-secret` and signal pids;
/// it reports what it reads there, whether it may make a namespace or mount, the pids it
/// sees in `/proc`, its `/tmp`'s size and a tag of its own pid (`<pid> <pid namespace>
/// <start time>`: a namespace's inode number is reused once it is gone, so a new instance
/// may get its predecessor's pid and namespace number, never also its start time).
const SIBLING: &str = r#"
import ctypes, json, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)

def refused(result):
    return os.strerror(ctypes.get_errno()) if result != 0 else "allowed"

print(json.dumps({"$ready": True}), flush=True)
batch = []
for line in sys.stdin:
    if line.strip():
        batch.append(json.loads(line))
        continue
    for request in batch:
        started = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]
        answer = {"tag": f"{os.getpid()} {os.readlink('/proc/self/ns/pid')} {started}"}
        if "write" in request:
            with open("/tmp/sibling-secret", "w") as secret:
                secret.write(request["write"])
        answer["kill"] = {}
        for pid in request.get("kill", []):
            try:
                os.kill(pid, signal.SIGKILL)
                answer["kill"][str(pid)] = "killed"
            except OSError as error:
                answer["kill"][str(pid)] = error.strerror
        try:
            answer["read"] = open("/tmp/sibling-secret").read()
        except OSError as error:
            answer["read"] = error.strerror
        # What its zygote may do to make its namespaces, it may not.
        answer["unshare"] = refused(libc.unshare(0x00020000))
        answer["mount"] = refused(libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))
        answer["procs"] = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
        tmp = os.statvfs("/tmp")
        answer["tmp_bytes"] = tmp.f_blocks * tmp.f_frsize
        print(json.dumps(answer))
    print(flush=True)
    batch = []
"#;

/// Whether this host gives forked instances namespaces of their own.
fn forks_get_namespaces() -> bool {
    let isolation = isolation::isolation();
    isolation.forks_get_namespaces(isolation.function_ids.is_ok())
}

async fn ask(runner: &mut FunctionRunner, request: Value) -> Value {
    let output = runner
        .invoke(&batch(&[&request.to_string()]))
        .await
        .unwrap();
    rows(&output).remove(0)
}

#[tokio::test]
async fn a_preloaded_instance_cannot_see_signal_or_read_its_siblings_or_the_zygote() {
    if !forks_get_namespaces() {
        return; // No namespaces to give on this host (the strict job would be refused).
    }
    let dir = job_dir();
    std::fs::write(dir.path().join("sibling.py"), SIBLING).unwrap();
    let mut spec = spec(&[&python_interpreter(), "sibling.py"], FunctionMode::Stream);
    spec.preload = vec!["json".into()];
    let mut first = test_runner("preload-siblings", dir.path(), &spec);
    let mut second = first.sibling();

    let written = ask(&mut first, serde_json::json!({"write": "only mine"})).await;
    assert_eq!(written["read"], "only mine");
    let zygote = first
        .zygote
        .as_ref()
        .unwrap()
        .pid()
        .await
        .expect("the zygote runs") as i32;
    let leader = first.warm_pid().expect("a warm instance") as i32;
    let function = process_of(&written["tag"]);
    let mut targets = vec![leader, function, zygote];
    targets.dedup();

    let attack = ask(&mut second, serde_json::json!({"kill": targets})).await;
    for target in &targets {
        assert_eq!(
            attack["kill"][target.to_string()],
            "No such process",
            "signalling {target} (the zygote is {zygote}): {attack}"
        );
    }
    assert_eq!(attack["read"], "No such file or directory", "{attack}");
    // Like a spawned instance: pid 2 of its own namespace, whose init (pid 1) is not
    // dumpable (its program is execute-only to the job's user), so `hidepid` hides it
    // too.
    assert_eq!(
        attack["procs"],
        serde_json::json!([2]),
        "only itself is in sight: {attack}"
    );
    assert_eq!(attack["tmp_bytes"], namespaces::SCRATCH_SIZE);
    assert_eq!(attack["unshare"], "Operation not permitted");
    assert_eq!(attack["mount"], "Operation not permitted");

    // Nothing happened to the sibling or the zygote.
    let again = ask(&mut first, serde_json::json!({})).await;
    assert_eq!(again["tag"], written["tag"]);
    assert_eq!(again["read"], "only mine");
    assert_eq!(
        first.zygote.as_ref().unwrap().pid().await,
        Some(zygote as u32)
    );

    // A new instance starts with an empty /tmp, forked from the same zygote.
    first.shutdown().await;
    assert_gone(function).await;
    let fresh = ask(&mut first, serde_json::json!({})).await;
    assert_ne!(fresh["tag"], written["tag"]);
    assert_eq!(fresh["read"], "No such file or directory", "{fresh}");
    assert_eq!(
        first.zygote.as_ref().unwrap().pid().await,
        Some(zygote as u32)
    );
    first.shutdown().await;
    second.shutdown().await;
}

/// Without a cgroup, a daemon a preloaded instance leaves behind (a new session, out of
/// the instance's process group) still ends with the instance: its PID namespace ends.
#[tokio::test]
async fn a_preloaded_instances_daemon_ends_with_its_namespace_even_without_a_cgroup() {
    if !forks_get_namespaces() {
        return; // No namespaces to give on this host (the strict job would be refused).
    }
    let dir = job_dir();
    std::fs::write(
        dir.path().join("daemon.py"),
        r#"
import os, subprocess, sys
sys.stdin.read()
namespace = os.readlink("/proc/self/ns/pid")
daemon = subprocess.Popen(["setsid", "sleep", "1000"])
open(os.environ["OUT"] + "/daemon.pid", "w").write(f"{daemon.pid} {namespace}")
print("{}")
"#,
    )
    .unwrap();
    let mut spec = spec(&[&python_interpreter(), "daemon.py"], FunctionMode::Exec);
    spec.preload = vec!["json".into()];
    let mut runner = test_runner("preload-daemon", dir.path(), &spec);
    runner.use_cgroups = false;
    runner.invoke(&batch(&["{}"])).await.unwrap();
    assert_gone(read_pid(&dir.path().join("daemon.pid"))).await;
}
