//! The PID namespace of an instance, a job folder over the size cap, and the attacks of
//! `attacks.rs` again from preloaded functions (continued from `containment.rs`).

use super::attacks::{
    HOST_SOCKETS, KERNEL_ATTACKS, LIFT_LIMITS_AND_LEAVE, POSTGRES_SOCKET, SNOOP_AND_SIGNAL,
    TOUCH_ROOT_FILES, attacker, granted, rand_suffix, run_attacker, wait_gone_with,
};
use super::*;

/// Runs `spec` once as job `job` and returns its report. Unlike `attack`, it does not
/// check that the job has no cgroup left: another instance of the job, or its preload
/// process, may still run.
async fn attack_beside(
    job: &str,
    dir: &Path,
    spec: &FunctionSpec,
) -> serde_json::Map<String, Value> {
    run_attacker(job, dir, spec).await.0
}

/// Kills the process when dropped, even when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child of its own, then lists every process it can see and tries to signal
/// and trace the platform and another instance of its own job (same user).
const LOOK_AROUND: &str = r#"
import subprocess
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    if getattr(libc, name)(*args) == -1:
        raise OSError(ctypes.get_errno(), name)
platform, sibling = int(sys.argv[1]), int(sys.argv[2])
child = subprocess.Popen(["sleep", "1000"])
own = {os.getpid(), child.pid}
others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in own)
report["processes in sight besides its own"] = "refused: none" if not others else others
attempt("signal the platform", lambda: os.kill(platform, signal.SIGURG))
attempt("trace the platform", lambda: call("ptrace", 16, platform, None, None))
attempt("signal another instance of its job", lambda: os.kill(sibling, signal.SIGURG))
parent = os.getppid()
# 0: its parent is outside its namespace (kill(0) would signal its own group).
attempt("signal its parent", lambda: os.kill(parent, signal.SIGURG) if parent else "refused: out of sight")
child.kill()
child.wait()
"#;

#[tokio::test]
async fn a_function_sees_and_reaches_only_its_own_processes() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    std::fs::write(dir.path().join("echo.py"), STREAM_ECHO).unwrap();
    // Another instance of the same job: the same user, so only a PID namespace hides it.
    let mut sibling = test_runner(
        "look-around",
        dir.path(),
        &spec(&["python3", "echo.py"], FunctionMode::Stream),
    );
    let first = sibling.invoke(&batch(&[r#"{"v":0}"#])).await.unwrap();
    let sibling_pid = process_of(&rows(&first)[0]["pid"]);
    let spec = attacker(
        LOOK_AROUND,
        &[&std::process::id().to_string(), &sibling_pid.to_string()],
    );
    let report = attack_beside("look-around", dir.path(), &spec).await;
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    let output = sibling.invoke(&batch(&[r#"{"v":1}"#])).await.unwrap();
    assert_eq!(rows(&output)[0]["pid"], rows(&first)[0]["pid"], "untouched");
    sibling.shutdown().await;
    neighbour.assert_unaffected().await;
}

/// Starts a daemon (double fork, new session) that `exec`s a sleeper with a unique
/// argument, answers its batch and ends (exec mode) or waits for the next (stream).
const LEAVE_A_DAEMON: &str = r#"
import os, sys
stream = os.environ["SLUICE_MODE"] == "stream"
if stream:
    print('{"$ready": true}', flush=True)
    while sys.stdin.readline().strip():
        pass
else:
    sys.stdin.read()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execvp("sleep", ["sleep", "1000." + sys.argv[1]])
    os._exit(0)
os.wait()
print("{}", flush=True)
if stream:
    print(flush=True)
    sys.stdin.read()
"#;

/// Without cgroups (a host that has none for Sluice), only the PID namespace ends a
/// process that left its instance's process group and session.
#[tokio::test]
async fn a_daemon_dies_with_its_instance_even_without_cgroups() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    for mode in [FunctionMode::Exec, FunctionMode::Stream] {
        let marker = format!("{}{}", std::process::id(), rand_suffix());
        let spec = spec(&["python3", "-c", LEAVE_A_DAEMON, &marker], mode);
        let mut runner = test_runner("daemon", dir.path(), &spec);
        runner.use_cgroups = false;
        let output = runner.invoke(&batch(&["{}"])).await.unwrap();
        assert_eq!(rows(&output).len(), 1, "{mode:?}");
        runner.shutdown().await;
        let survivors = wait_gone_with(&marker).await;
        assert!(
            survivors.is_empty(),
            "{mode:?}: a daemon outlived its instance: {survivors:?}"
        );
    }
    neighbour.assert_unaffected().await;
}

#[tokio::test]
async fn a_job_folder_over_the_size_cap_is_refused_for_good() {
    let Ok(_) = isolation::isolation().function_ids else {
        eprintln!("functions cannot get users of their own here: nothing is staged");
        return;
    };
    let dir = job_dir();
    // Sparse: the cap counts the bytes a copy would write, checked before copying.
    let big = std::fs::File::create(dir.path().join("model.bin")).unwrap();
    big.set_len(bundle::DEFAULT_MAX_BUNDLE_BYTES + 1).unwrap();
    let mut runner = test_runner("too-big", dir.path(), &sh("cat"));
    let error = runner.invoke(&batch(&["{}"])).await.unwrap_err();
    assert!(matches!(error, InvokeError::Refused { .. }), "{error:?}");
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("holds more than 1073741824 bytes"),
        "{message}"
    );
    assert!(message.contains("SLUICE_BUNDLE_MAX_BYTES"), "{message}");
    std::fs::remove_file(dir.path().join("model.bin")).unwrap();
    let output = runner.invoke(&batch(&["{}"])).await.unwrap();
    assert_eq!(output.rows, b"{}\n", "staged once the folder fits");
}

/// `attacker`'s function as a preloaded job: the script in the job folder, forked from
/// a zygote that imported `json`.
fn preloaded_attacker(dir: &Path, script: &str, args: &[&str]) -> FunctionSpec {
    let mut spec = attacker(script, args);
    std::fs::write(dir.join("attack.py"), &spec.command[2]).unwrap();
    let mut command = vec![python_interpreter(), "attack.py".to_owned()];
    command.extend(args.iter().map(|arg| (*arg).to_owned()));
    spec.command = command;
    spec.preload = vec!["json".into()];
    spec
}

#[tokio::test]
async fn attacks_from_a_preloaded_function_are_refused_too() {
    std::os::unix::net::UnixStream::connect(POSTGRES_SOCKET)
        .unwrap_or_else(|e| panic!("PostgreSQL must listen on {POSTGRES_SOCKET}: {e}"));
    let neighbour = Neighbour::start().await;
    let victim = KillOnDrop(
        std::process::Command::new("sleep")
            .arg("1000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let marker = format!("{}{}", std::process::id(), rand_suffix());
    let (platform, victim_pid) = (std::process::id().to_string(), victim.0.id().to_string());
    let attacks: [(&str, &str, Vec<&str>); 5] = [
        (
            "preloaded-root-files",
            TOUCH_ROOT_FILES,
            vec![
                "/etc/shadow",
                "/usr/bin/env",
                "/etc/sluice-preloaded-attack",
            ],
        ),
        ("preloaded-sockets", HOST_SOCKETS, vec![POSTGRES_SOCKET]),
        ("preloaded-kernel", KERNEL_ATTACKS, vec![&victim_pid]),
        (
            "preloaded-snoop",
            SNOOP_AND_SIGNAL,
            vec!["no-such-secret", &platform],
        ),
        ("preloaded-limits", LIFT_LIMITS_AND_LEAVE, vec![&marker]),
    ];
    for (job, script, args) in attacks {
        let dir = job_dir();
        let mut spec = preloaded_attacker(dir.path(), script, &args);
        if script == LIFT_LIMITS_AND_LEAVE {
            // As in `attacks.rs`: limits to lift. (Elsewhere none: the private /tmp the
            // kernel attacks fill counts against the memory limit.)
            spec.memory = Some(128 << 20);
            spec.max_processes = 8;
        }
        let report = attack_beside(job, dir.path(), &spec).await;
        assert_eq!(granted(&report), Vec::<String>::new(), "{job}: {report:?}");
    }
    let survivors = wait_gone_with(&marker).await;
    assert!(
        survivors.is_empty(),
        "outlived their instance: {survivors:?}"
    );
    let _ = std::fs::remove_file("/etc/sluice-preloaded-attack");
    drop(victim);
    neighbour.assert_unaffected().await;
}
