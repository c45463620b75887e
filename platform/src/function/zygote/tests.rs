//! Preload: modules imported once, forked instances isolated and contained like spawned
//! ones, and a dead zygote restarted. Real `python3` processes in a temporary job folder.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::*;

/// A module whose import is slow and leaves a trace: one line (the importing pid) in
/// `imports.log` beside it.
const SLOW_MODULE: &str = r#"
import os, time
with open(os.path.join(os.environ["OUT"], "imports.log"), "a") as log:
    log.write(f"{os.getpid()}\n")
time.sleep(0.5)
"#;

/// A stream function that answers each batch with one row describing its sandbox.
const REPORT: &str = r#"
import json, os, sys
import slowmod

def tag():
    started = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]
    return f"{os.getpid()} {os.readlink('/proc/self/ns/pid')} {started}"

def report():
    status = open("/proc/self/status").read()
    cap_eff = [line for line in status.splitlines() if line.startswith("CapEff:")][0].split()[1]
    return {
        "pid": tag(), "ppid": os.getppid(), "pidns": os.readlink("/proc/self/ns/pid"),
        "env": dict(os.environ), "fds": sorted(os.listdir("/proc/self/fd")),
        "cwd": os.getcwd(), "cgroup": open("/proc/self/cgroup").read(),
        "netns": os.readlink("/proc/self/ns/net"), "cap_eff": cap_eff,
        "argv": sys.argv, "name": __name__, "uid": os.getuid(), "gid": os.getgid(),
        "seccomp": [line for line in status.splitlines() if line.startswith("Seccomp:")][0].split()[1],
        "mountns": os.readlink("/proc/self/ns/mnt"),
    }

print(json.dumps({"$ready": True}), flush=True)
for line in sys.stdin:
    if line.strip():
        continue
    print(json.dumps(report()))
    print(flush=True)
"#;

fn preload_spec(command: &[&str], mode: FunctionMode, modules: &[&str]) -> FunctionSpec {
    let mut spec = spec(command, mode);
    spec.preload = modules.iter().map(|module| module.to_string()).collect();
    spec
}

fn job_folder() -> tempfile::TempDir {
    let dir = job_dir();
    std::fs::write(dir.path().join("slowmod.py"), SLOW_MODULE).unwrap();
    std::fs::write(dir.path().join("report.py"), REPORT).unwrap();
    // Jobs of different names (so of different users) append to it.
    let log = dir.path().join("imports.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    dir
}

/// Pids that imported `slowmod`, in order.
fn imports(dir: &Path) -> Vec<i64> {
    std::fs::read_to_string(dir.join("imports.log"))
        .unwrap_or_default()
        .lines()
        .map(|pid| pid.parse().unwrap())
        .collect()
}

async fn report(runner: &mut FunctionRunner) -> Value {
    let output = runner.invoke(&batch(&["{}"])).await.unwrap();
    rows(&output).remove(0)
}

/// The parent of process `pid`, as the platform sees it.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[1].parse().unwrap()
}

/// The warm instance's leader: a child of the zygote, leading its own process group.
fn forked_leader(runner: &FunctionRunner) -> i32 {
    runner.warm_pid().expect("a warm instance") as i32
}

async fn zygote_pid(runner: &FunctionRunner) -> i32 {
    let zygote = runner.zygote.as_ref().expect("the runner has a zygote");
    zygote.pid().await.expect("the zygote runs") as i32
}

/// Instance cgroups of `job` whose name starts with `prefix` (none without cgroups).
fn instance_cgroups(job: &str, prefix: &str) -> Vec<String> {
    let Some(hierarchy) = isolation::isolation().cgroups.as_ref() else {
        return Vec::new();
    };
    let mut names: Vec<String> = hierarchy
        .job_dirs(job)
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    // Under cgroup v1 an instance has a directory in each hierarchy used.
    names.sort_unstable();
    names.dedup();
    names
}

/// The interpreter itself: `python3` on PATH may be a wrapper script that sets
/// environment variables of its own, which a forked instance (rightly) does not get.
fn interpreter() -> String {
    super::python_interpreter()
}

#[tokio::test]
async fn a_preloaded_module_is_imported_once_for_every_instance() {
    let dir = job_folder();
    let spec = preload_spec(
        &["python3", "report.py"],
        FunctionMode::Stream,
        &["slowmod"],
    );
    // Three runners of one job, each with a warm instance: three forks of one zygote.
    let mut runners: Vec<FunctionRunner> = (0..3)
        .map(|_| test_runner("preload-once", dir.path(), &spec))
        .collect();
    let mut instance_pids = Vec::new();
    for runner in &mut runners {
        let output = runner.invoke(&batch(&["{}"])).await.unwrap();
        assert!(
            output.init_time.is_some(),
            "a cold start measures init time"
        );
        instance_pids.push(process_of(&rows(&output)[0]["pid"]));
    }
    instance_pids.sort_unstable();
    instance_pids.dedup();
    assert_eq!(instance_pids.len(), 3, "three instances: {instance_pids:?}");
    let imported_by = imports(dir.path());
    assert_eq!(imported_by.len(), 1, "imported once: {imported_by:?}");
    let zygote = zygote_pid(&runners[0]).await;
    assert!(!instance_pids.contains(&zygote), "by the zygote");
    assert_eq!(imported_by[0], i64::from(zygote));
    // A warm instance answers again without another import.
    let again = report(&mut runners[0]).await;
    assert!(instance_pids.contains(&process_of(&again["pid"])));

    // Exec mode forks one process per batch from its own job's zygote.
    std::fs::write(
        dir.path().join("exec.py"),
        "import json, os, sys, slowmod\nsys.stdin.read()\nstarted = open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]\nprint(json.dumps({'pid': f\"{os.getpid()} {os.readlink('/proc/self/ns/pid')} {started}\"}))\n",
    )
    .unwrap();
    let exec = preload_spec(&["python3", "exec.py"], FunctionMode::Exec, &["slowmod"]);
    let mut runner = test_runner("preload-once-exec", dir.path(), &exec);
    let first = rows(&runner.invoke(&batch(&["{}"])).await.unwrap())[0]["pid"].clone();
    let second = rows(&runner.invoke(&batch(&["{}"])).await.unwrap())[0]["pid"].clone();
    assert_ne!(first, second, "a fresh process per batch");
    assert_eq!(
        imports(dir.path()).len(),
        2,
        "one more import, by the exec job's zygote"
    );

    // Without preload, every instance imports the module itself.
    let plain = spec_without_preload(&spec);
    for _ in 0..2 {
        let mut runner = test_runner("preload-once-plain", dir.path(), &plain);
        report(&mut runner).await;
        runner.shutdown().await;
    }
    assert_eq!(imports(dir.path()).len(), 4);
    for runner in &mut runners {
        runner.shutdown().await;
    }
}

fn spec_without_preload(spec: &FunctionSpec) -> FunctionSpec {
    let mut spec = spec.clone();
    spec.preload.clear();
    spec
}

#[tokio::test]
async fn a_forked_instance_is_isolated_like_a_spawned_one() {
    // SAFETY: see `the_environment_is_cleared_to_what_the_job_declares`; the name is
    // unique to this test.
    unsafe { std::env::set_var("SLUICE_TEST_PRELOAD_SECRET", "hunter2") };
    let dir = job_folder();
    let python = interpreter();
    let mut spec = preload_spec(&[&python, "report.py"], FunctionMode::Stream, &["slowmod"]);
    spec.env
        .insert("API_URL".into(), "http://example.test".into());
    let mut forked_runner = test_runner("preload-isolated", dir.path(), &spec);
    let forked = report(&mut forked_runner).await;
    let mut spawned_runner =
        test_runner("preload-isolated", dir.path(), &spec_without_preload(&spec));
    let spawned = report(&mut spawned_runner).await;

    // Exactly the environment a spawned instance gets (Python may add LC_CTYPE itself
    // when it coerces a C locale, at start: in the zygote, not in its children).
    let environment = |report: &Value| {
        let mut env = report["env"].as_object().unwrap().clone();
        env.remove("LC_CTYPE");
        env
    };
    assert_eq!(environment(&forked), environment(&spawned));
    assert!(!environment(&forked).contains_key("SLUICE_TEST_PRELOAD_SECRET"));
    assert_eq!(forked["env"]["SLUICE_INSTANCE"], "preload-isolated-1");
    assert_eq!(forked["env"]["API_URL"], "http://example.test");

    // Its own process group, led by a child of the zygote (not of the platform).
    let zygote = zygote_pid(&forked_runner).await;
    let leader = forked_leader(&forked_runner);
    let function = process_of(&forked["pid"]);
    let group_of = |pid: i32| {
        nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            .unwrap()
            .as_raw()
    };
    assert_eq!(parent_of(leader), zygote);
    assert_eq!(group_of(leader), leader);
    assert_eq!(group_of(function), leader);
    assert_ne!(group_of(zygote), leader);
    // Only its three pipes (and the directory listing itself) are open.
    assert_eq!(forked["fds"], serde_json::json!(["0", "1", "2", "3"]));
    // The job folder, or its staged copy when the function runs as the job's own user.
    let cwd = Path::new(forked["cwd"].as_str().unwrap());
    if isolation::isolation().function_ids.is_ok() {
        assert!(cwd.ends_with("bundle"), "{cwd:?}");
        assert!(Path::new(spawned["cwd"].as_str().unwrap()).ends_with("bundle"));
    } else {
        assert_eq!(cwd, dir.path().canonicalize().unwrap());
    }
    assert_eq!(forked["name"], "__main__");
    assert_eq!(forked["argv"], serde_json::json!([cwd.join("report.py")]));
    let isolation = isolation::isolation();
    if isolation.drop_capabilities.is_some() {
        assert_eq!(forked["cap_eff"], "0000000000000000");
    }
    assert_eq!(forked["cap_eff"], spawned["cap_eff"]);
    // The job's own user, the system call filter and a mount namespace, like a spawned one.
    if isolation.function_ids.is_ok() {
        assert_ne!(forked["uid"], 0);
        assert_eq!(forked["uid"], spawned["uid"]);
        assert_eq!(forked["gid"], spawned["gid"]);
    }
    if isolation.syscall_filter.is_ok() {
        assert_eq!(forked["seccomp"], "2", "filter mode");
    }
    if isolation.mount_namespaces && isolation.function_ids.is_ok() {
        let platform_mountns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        assert_ne!(forked["mountns"], platform_mountns.to_str().unwrap());
    }
    if isolation.network_namespaces {
        let platform_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(forked["netns"], platform_netns.to_str().unwrap());
    }
    // A PID and a mount namespace of its own, not the zygote's: like a spawned instance,
    // it is pid 2 of its namespace, under an init, with no parent in sight.
    let namespace_of = |pid: i32, kind: &str| {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        link.to_str().unwrap().to_owned()
    };
    if isolation.forks_get_namespaces(isolation.function_ids.is_ok()) {
        assert_ne!(forked["pidns"], namespace_of(zygote, "pid"));
        assert_ne!(forked["mountns"], namespace_of(zygote, "mnt"));
        assert_eq!(forked["ppid"], spawned["ppid"]);
        assert_eq!(forked["ppid"], 0);
        assert!(
            forked["pid"].as_str().unwrap().starts_with("2 "),
            "{forked}"
        );
    } else {
        assert_eq!(forked["pidns"], namespace_of(zygote, "pid"));
        assert_eq!(forked["ppid"], zygote);
    }
    if isolation.cgroups.is_some() {
        let cgroup = forked["cgroup"].as_str().unwrap();
        assert!(
            cgroup.contains("/preload-isolated/preload-isolated-1."),
            "its own cgroup: {cgroup}"
        );
    }
    forked_runner.shutdown().await;
    spawned_runner.shutdown().await;
    assert_gone(function).await;
    assert_gone(leader).await;
}

/// A stream function that, on its first batch, starts a child in its group and one that
/// leaves it (recording both pids), then hangs; once `$OUT/hang.done` exists it runs
/// `report.py` instead (the bundle itself cannot change while the job runs).
const HANG: &str = r#"
import json, os, runpy, subprocess, sys, time
if os.path.exists(os.environ["OUT"] + "/hang.done"):
    runpy.run_path("report.py", run_name="__main__")
    sys.exit(0)
print(json.dumps({"$ready": True}), flush=True)
sys.stdin.readline()
namespace = os.readlink("/proc/self/ns/pid")
open(os.environ["OUT"] + "/pid", "w").write(f"{os.getpid()} {namespace}")
child = subprocess.Popen(["sleep", "1000"])
open(os.environ["OUT"] + "/child.pid", "w").write(f"{child.pid} {namespace}")
if sys.argv[1] == "escape":
    escaped = subprocess.Popen(["setsid", "sleep", "1000"])
    open(os.environ["OUT"] + "/escaped.pid", "w").write(f"{escaped.pid} {namespace}")
time.sleep(1000)
"#;

#[tokio::test]
async fn a_forked_instance_past_its_timeout_is_killed_with_its_children() {
    let dir = job_folder();
    std::fs::write(dir.path().join("hang.py"), HANG).unwrap();
    let escape = if isolation::isolation().cgroups.is_some() {
        "escape"
    } else {
        "stay"
    };
    let mut spec = preload_spec(
        &["python3", "hang.py", escape],
        FunctionMode::Stream,
        &["json"],
    );
    spec.timeout = Duration::from_secs(3);
    let mut runner = test_runner("preload-hang", dir.path(), &spec);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert_eq!(runner.warm_instance(), None);
    let zygote = zygote_pid(&runner).await;
    assert_gone(read_pid(&dir.path().join("pid"))).await;
    assert_gone(read_pid(&dir.path().join("child.pid"))).await;
    if escape == "escape" {
        assert_gone(read_pid(&dir.path().join("escaped.pid"))).await;
    }
    assert_eq!(
        instance_cgroups("preload-hang", "preload-hang-1."),
        Vec::<String>::new()
    );
    // The zygote is not part of the instance and carries on.
    assert!(!is_gone(zygote));
    std::fs::write(dir.path().join("hang.done"), "").unwrap();
    report(&mut runner).await;
    assert_eq!(parent_of(forked_leader(&runner)), zygote);
    runner.shutdown().await;
}

#[tokio::test]
async fn a_forked_instance_reports_exits_signals_and_limits_like_a_spawned_one() {
    let dir = job_folder();
    std::fs::write(
        dir.path().join("fail.py"),
        r#"
import os, signal, sys
how = sys.stdin.read().strip()
if how == '"exit"':
    print("exiting with 3", file=sys.stderr)
    sys.exit(3)
if how == '"segv"':
    print("about to crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
if how == '"raise"':
    raise ValueError("bad record")
hog = b"x" * (1 << 30)
"#,
    )
    .unwrap();
    let mut spec = preload_spec(&["python3", "fail.py"], FunctionMode::Exec, &["json"]);
    spec.memory = Some(64 << 20);
    let mut runner = test_runner("preload-fail", dir.path(), &spec);
    match runner.invoke(&batch(&["\"exit\""])).await.unwrap_err() {
        InvokeError::Exit { code, stderr_tail } => {
            assert_eq!(code, 3);
            assert_eq!(stderr_tail, "exiting with 3");
        }
        other => panic!("expected exit code 3, got {other:?}"),
    }
    match runner.invoke(&batch(&["\"segv\""])).await.unwrap_err() {
        InvokeError::Killed {
            signal,
            stderr_tail,
        } => {
            assert_eq!(signal, nix::libc::SIGSEGV);
            assert_eq!(stderr_tail, "about to crash");
        }
        other => panic!("expected a kill by SIGSEGV, got {other:?}"),
    }
    match runner.invoke(&batch(&["\"raise\""])).await.unwrap_err() {
        InvokeError::Exit { code, stderr_tail } => {
            assert_eq!(code, 1);
            assert!(
                stderr_tail.contains("ValueError: bad record"),
                "{stderr_tail}"
            );
        }
        other => panic!("expected a traceback and exit code 1, got {other:?}"),
    }
    let error = runner.invoke(&batch(&["\"hog\""])).await.unwrap_err();
    assert!(
        matches!(error, InvokeError::MemoryLimit { limit, .. } if limit == 64 << 20),
        "{error:?}"
    );
    // Only the zygote's own cgroup is left while the runner lives.
    let left = instance_cgroups("preload-fail", "");
    assert!(
        left.iter()
            .all(|name| name.starts_with("preload-fail-preload-1.")),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_dead_zygote_is_restarted_by_the_next_instance_start() {
    let dir = job_folder();
    let spec = preload_spec(
        &["python3", "report.py"],
        FunctionMode::Stream,
        &["slowmod"],
    );
    let mut runner = test_runner("preload-restart", dir.path(), &spec);
    let first = process_of(&report(&mut runner).await["pid"]);
    let first_zygote = zygote_pid(&runner).await;

    nix::sys::signal::kill(Pid::from_raw(first_zygote), Signal::SIGKILL).unwrap();
    assert_gone(first_zygote).await;
    // Its instances die with it.
    assert_gone(first).await;

    let second = process_of(&report(&mut runner).await["pid"]);
    let second_zygote = zygote_pid(&runner).await;
    assert_ne!(second_zygote, first_zygote);
    assert_eq!(parent_of(forked_leader(&runner)), second_zygote);
    assert_eq!(
        imports(dir.path()),
        vec![i64::from(first_zygote), i64::from(second_zygote)]
    );
    let started = Instant::now();
    runner.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped by SIGTERM, no grace wait"
    );
    assert_gone(second).await;
}

#[tokio::test]
async fn a_preload_that_cannot_import_fails_the_start_for_good() {
    let dir = job_folder();
    let spec = preload_spec(
        &["python3", "report.py"],
        FunctionMode::Stream,
        &["no_such_module_for_sluice"],
    );
    let mut runner = test_runner("preload-broken", dir.path(), &spec);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    match &error {
        InvokeError::Preload {
            permanent,
            stderr_tail,
            ..
        } => {
            assert!(permanent);
            assert!(
                stderr_tail.contains("No module named 'no_such_module_for_sluice'"),
                "{stderr_tail}"
            );
        }
        other => panic!("expected a preload error, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert!(error.to_string().contains("function.preload"), "{error}");
    assert_eq!(instance_cgroups("preload-broken", ""), Vec::<String>::new());
}

#[tokio::test]
async fn a_forked_fork_bomb_hits_the_instance_process_limit() {
    if !isolation::isolation()
        .cgroups
        .as_ref()
        .is_some_and(|cgroups| cgroups.limits_processes())
    {
        return; // Nothing limits the process count without a pids cgroup.
    }
    let dir = job_folder();
    std::fs::write(
        dir.path().join("bomb.py"),
        r#"
import os, sys, time
sys.stdin.read()
for forked in range(200):
    try:
        pid = os.fork()
    except OSError as error:
        print(f"fork {forked + 1} failed: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    if pid == 0:
        os.setsid()
        time.sleep(1000)
        os._exit(0)
    # The parent records each child: a child could be killed before it wrote itself.
    with open(os.environ["OUT"] + "/children.pid", "a") as f:
        f.write(f"{pid} {os.readlink('/proc/self/ns/pid')}\n")
print("{}")
"#,
    )
    .unwrap();
    let mut spec = preload_spec(&["python3", "bomb.py"], FunctionMode::Exec, &["json"]);
    spec.max_processes = 16;
    let mut runner = test_runner("preload-bomb", dir.path(), &spec);
    match runner.invoke(&batch(&["{}"])).await {
        Err(error @ InvokeError::ProcessLimit { limit: 16, .. }) => {
            assert!(error.to_string().contains("fork 16 failed"), "{error}");
        }
        other => panic!("expected a process limit error, got {other:?}"),
    }
    let children: Vec<i32> = std::fs::read_to_string(dir.path().join("children.pid"))
        .unwrap()
        .lines()
        .map(|tag| host_pid(tag).unwrap_or(NO_PROCESS))
        .collect();
    assert_eq!(
        children.len(),
        15,
        "the instance itself is the 16th process"
    );
    for pid in children {
        assert_gone(pid).await;
    }
    let left = instance_cgroups("preload-bomb", "preload-bomb-1.");
    assert!(left.is_empty(), "{left:?}");
}
