//! Containment: one test per way a function can misbehave. Each checks that the
//! invocation fails (or succeeds) with an error that says what happened, that no process
//! of the function survives it, that its cgroup is gone, and that a second job running
//! beside it all along (a warm stream instance plus exec invocations) is unaffected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::task::JoinHandle;

use super::*;

/// A second job that keeps invoking its function while a test's function misbehaves.
struct Neighbour {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(FunctionRunner, FunctionRunner, Value)>,
    _dir: tempfile::TempDir,
}

/// One round of the neighbour: a batch through the warm stream instance (same pid as
/// ever) and one through a fresh exec process.
async fn neighbour_round(stream: &mut FunctionRunner, exec: &mut FunctionRunner, pid: &Value) {
    let output = stream.invoke(&batch(&[r#"{"v":1}"#, r#"{"v":2}"#])).await;
    let output = output.unwrap_or_else(|error| panic!("neighbour stream batch failed: {error}"));
    let rows = rows(&output);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|row| row["pid"] == *pid),
        "same instance: {rows:?}"
    );
    let output = exec.invoke(&batch(&[r#"{"n":1}"#])).await;
    let output = output.unwrap_or_else(|error| panic!("neighbour exec batch failed: {error}"));
    assert_eq!(output.rows, b"{\"n\":1}\n");
}

impl Neighbour {
    async fn start() -> Neighbour {
        let dir = job_dir();
        std::fs::write(dir.path().join("echo.py"), STREAM_ECHO).unwrap();
        let mut stream = test_runner(
            "neighbour",
            dir.path(),
            &spec(&["python3", "echo.py"], FunctionMode::Stream),
        );
        let mut exec = test_runner(
            "neighbour-exec",
            dir.path(),
            &spec(&["cat"], FunctionMode::Exec),
        );
        let first = stream.invoke(&batch(&[r#"{"v":0}"#])).await.unwrap();
        let pid = rows(&first)[0]["pid"].clone();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                while !stop.load(Ordering::Relaxed) {
                    neighbour_round(&mut stream, &mut exec, &pid).await;
                    // Pacing, so the neighbour does not crowd a small machine.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (stream, exec, pid)
            }
        });
        Neighbour {
            stop,
            task,
            _dir: dir,
        }
    }

    /// Stops the loop (any failed round fails the test here), runs one more round after
    /// the misbehaviour was contained, and shuts the neighbour down.
    async fn assert_unaffected(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut stream, mut exec, pid) = self.task.await.expect("the neighbour kept working");
        neighbour_round(&mut stream, &mut exec, &pid).await;
        let process = process_of(&pid);
        stream.shutdown().await;
        assert_gone(process).await;
    }
}

fn cgroups() -> Option<&'static cgroup::CgroupHierarchy> {
    isolation::isolation().cgroups.as_ref()
}

/// Every pid listed (one per line) in `file` under `dir` is gone.
async fn assert_all_gone(dir: &Path, file: &str) -> usize {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file} was not written: {e}"));
    let pids: Vec<i32> = text
        .lines()
        .map(|tag| host_pid(tag).unwrap_or(NO_PROCESS))
        .collect();
    for &pid in &pids {
        assert_gone(pid).await;
    }
    pids.len()
}

/// No instance cgroup of `job` is left; after the runner is dropped, no job directory.
fn assert_no_cgroups(job: &str, runner: FunctionRunner) {
    let Some(hierarchy) = cgroups() else {
        return;
    };
    let job_dirs = hierarchy.job_dirs(job);
    for dir in &job_dirs {
        let instances: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| entry.path().is_dir())
                    .map(|entry| entry.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(instances.is_empty(), "instance cgroups left: {instances:?}");
    }
    drop(runner);
    assert!(
        job_dirs.iter().all(|dir| !dir.exists()),
        "job cgroup left: {job_dirs:?}"
    );
}

/// A shell line that starts a sleeper which leaves the process group (and records its
/// pid in `escaped.pid`), when cgroups can catch it; without cgroups nothing can, so the
/// tests do not start one.
fn escapee() -> &'static str {
    if cgroups().is_some() {
        "setsid sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) >> $OUT/escaped.pid;"
    } else {
        ": > $OUT/escaped.pid;"
    }
}

#[tokio::test]
async fn a_crash_is_contained() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();

    // A segfault, in exec mode, with a child in the group and one that left it.
    let segfault = sh(&format!(
        "sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) > $OUT/child.pid; {} cat >/dev/null; echo 'about to crash' >&2; kill -SEGV $$",
        escapee()
    ));
    let mut runner = test_runner("crash", dir.path(), &segfault);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    match &error {
        InvokeError::Killed {
            signal,
            stderr_tail,
        } => {
            assert_eq!(*signal, nix::libc::SIGSEGV);
            assert_eq!(stderr_tail, "about to crash");
        }
        other => panic!("expected a kill by SIGSEGV, got {other:?}"),
    }
    assert!(error.to_string().contains("SIGSEGV"), "{error}");
    assert!(error.is_transient());
    assert_all_gone(dir.path(), "child.pid").await;
    assert_all_gone(dir.path(), "escaped.pid").await;
    assert_no_cgroups("crash", runner);

    // `exit 1` from a stream instance in the middle of a batch.
    let exit = spec(
        &[
            "sh",
            "-c",
            &format!(
                "sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) > $OUT/child.pid; {} read line; exit 1",
                escapee()
            ),
        ],
        FunctionMode::Stream,
    );
    let mut runner = test_runner("crash", dir.path(), &exit);
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(
        matches!(error, InvokeError::Exit { code: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("exited with code 1"), "{error}");
    assert_eq!(runner.warm_instance(), None);
    assert_all_gone(dir.path(), "child.pid").await;
    assert_all_gone(dir.path(), "escaped.pid").await;
    assert_no_cgroups("crash", runner);

    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn a_hang_past_the_timeout_is_killed() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let mut spec = sh(&format!(
        "sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) > $OUT/child.pid; {} echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec sleep 1000",
        escapee()
    ));
    spec.timeout = Duration::from_secs(1);
    let mut runner = test_runner("hang", dir.path(), &spec);
    let started = Instant::now();
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error:?}");
    assert!(
        error.to_string().contains("did not finish within 1s"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_all_gone(dir.path(), "pid").await;
    assert_all_gone(dir.path(), "child.pid").await;
    assert_all_gone(dir.path(), "escaped.pid").await;
    assert_no_cgroups("hang", runner);
    neighbour.assert_unaffected().await;
}

/// Answers each batch with `{"ok": 1}`, ignores SIGTERM (and so does its child), and
/// keeps running after stdin closes.
const IGNORES_SIGTERM: &str = r#"
trap '' TERM
echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid
sleep 1000 & echo $! $(readlink /proc/$!/ns/pid) > $OUT/child.pid
echo '{"$ready": true}'
while IFS= read -r line; do
  if [ -z "$line" ]; then echo '{"ok": 1}'; echo; fi
done
exec sleep 1000
"#;

#[tokio::test]
async fn an_instance_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let spec = spec(&["sh", "-c", IGNORES_SIGTERM], FunctionMode::Stream);
    let mut runner = test_runner("ignores-term", dir.path(), &spec);
    runner.set_stop_grace(Duration::from_millis(300));
    let output = runner.invoke(&batch(&["{}"])).await.unwrap();
    assert_eq!(output.rows, b"{\"ok\": 1}\n");

    let started = Instant::now();
    runner.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "waited the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "did not wait the default 5 s: {took:?}"
    );
    assert_eq!(runner.warm_instance(), None);
    assert_all_gone(dir.path(), "pid").await;
    assert_all_gone(dir.path(), "child.pid").await;
    assert_no_cgroups("ignores-term", runner);
    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn a_memory_blow_up_fails_with_an_error_naming_the_memory_limit() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let mut spec = spec(
        &[
            "python3",
            "-c",
            "import os, sys\nopen(os.environ['OUT'] + '/pid', 'w').write('%d %s' % (os.getpid(), os.readlink('/proc/self/ns/pid')))\nsys.stdin.read()\nhog = b'x' * (1 << 30)\nprint('{}')",
        ],
        FunctionMode::Exec,
    );
    spec.memory = Some(64 << 20);
    let memory_cgroup = cgroups().is_some_and(|cgroups| cgroups.limits_memory());
    // With cgroups (when the host has a memory cgroup) and without: RLIMIT_AS.
    for use_cgroups in [true, false] {
        let mut runner = test_runner("memory-hog", dir.path(), &spec);
        runner.use_cgroups = use_cgroups;
        let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("hit the memory limit (function.memory = 64MiB)"),
            "{message}"
        );
        match error {
            InvokeError::MemoryLimit {
                limit,
                enforcement,
                stderr_tail,
            } => {
                assert_eq!(limit, 64 << 20);
                if use_cgroups && memory_cgroup {
                    assert_eq!(enforcement, MemoryEnforcement::Cgroup);
                    assert!(message.contains("out-of-memory killer"), "{message}");
                } else {
                    assert_eq!(enforcement, MemoryEnforcement::AddressSpace);
                    assert!(stderr_tail.contains("MemoryError"), "{stderr_tail}");
                }
            }
            other => panic!("expected a memory limit error, got {other:?}"),
        }
        assert_all_gone(dir.path(), "pid").await;
        assert_no_cgroups("memory-hog", runner);
    }
    neighbour.assert_unaffected().await;
}

/// Forks up to 200 children that leave the process group and sleep; each records its
/// pid. Exits 1 when a fork is refused. Bounded, so safe without any limit too.
const FORK_BOMB: &str = r#"
import os, sys, time
sys.stdin.read()
leave_group = sys.argv[1] == "setsid"
forked = 0
try:
    while forked < 200:
        pid = os.fork()
        if pid == 0:
            if leave_group:
                os.setsid()
            with open(os.environ["OUT"] + "/children.pid", "a") as f:
                f.write(f"{os.getpid()} {os.readlink('/proc/self/ns/pid')}\n")
            time.sleep(1000)
            os._exit(0)
        forked += 1
except OSError as error:
    print(f"fork {forked + 1} failed: {error}", file=sys.stderr, flush=True)
    # Its end ends its PID namespace: first let every child record itself (bounded).
    for _ in range(500):
        try:
            with open(os.environ["OUT"] + "/children.pid") as f:
                if len(f.readlines()) >= forked:
                    break
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    sys.exit(1)
print("{}")
"#;

#[tokio::test]
async fn a_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    std::fs::write(dir.path().join("bomb.py"), FORK_BOMB).unwrap();
    let limited = cgroups().is_some_and(|cgroups| cgroups.limits_processes());
    // Children leave the process group only when a cgroup can still find them.
    let mode = if limited { "setsid" } else { "stay" };
    let mut spec = spec(&["python3", "bomb.py", mode], FunctionMode::Exec);
    spec.max_processes = 32;
    spec.timeout = Duration::from_secs(30);
    let mut runner = test_runner("fork-bomb", dir.path(), &spec);
    let result = runner.invoke(&batch(&["{}"])).await;
    if limited {
        match result {
            Err(error @ InvokeError::ProcessLimit { limit: 32, .. }) => {
                let message = error.to_string();
                assert!(message.contains("function.max_processes = 32"), "{message}");
                assert!(
                    message.contains("fork 32 failed"),
                    "the tail says which fork failed: {message}"
                );
            }
            other => panic!("expected a process limit error, got {other:?}"),
        }
    } else {
        // Without cgroups nothing limits the count; the bomb's own bound ends it.
        assert!(result.is_ok(), "{result:?}");
    }
    let children = assert_all_gone(dir.path(), "children.pid").await;
    if limited {
        assert_eq!(children, 31, "the function itself is the 32nd process");
    }
    assert_no_cgroups("fork-bomb", runner);
    neighbour.assert_unaffected().await;
}

mod output;

mod attacks;

mod pids;
