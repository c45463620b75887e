//! Attacks from function code (continued from `containment.rs`): each function
//! tries something a data function has no business doing and reports, as its output
//! row, what the system let it do. Every attempt must be refused, and a second job
//! running beside it all along must be unaffected.

use super::*;

/// Prelude of every attacker: `attempt(name, fn)` records "succeeded" or the refusal in
/// `report`, which the script prints as its one output row at the end.
pub(super) const ATTACK_PRELUDE: &str = r#"
import ctypes, json, os, signal, socket, sys, time
sys.stdin.read()
report = {}
def attempt(name, action):
    try:
        result = action()
        report[name] = "succeeded" if result is None else result
    except Exception as error:
        report[name] = "refused: " + type(error).__name__
def write(path, value):
    with open(path, "w") as f:
        f.write(value)
def read(path):
    with open(path, "rb") as f:
        f.read(1)
"#;

pub(super) fn attacker(script: &str, args: &[&str]) -> FunctionSpec {
    let source = format!("{ATTACK_PRELUDE}\n{script}\nprint(json.dumps(report), flush=True)\n");
    let mut command = vec!["python3", "-c", source.as_str()];
    command.extend_from_slice(args);
    spec(&command, FunctionMode::Exec)
}

/// Runs `spec` once as job `job` and returns its report, after checking that nothing of
/// it is left.
pub(super) async fn attack(
    job: &str,
    dir: &Path,
    spec: &FunctionSpec,
) -> serde_json::Map<String, Value> {
    let (report, runner) = run_attacker(job, dir, spec).await;
    assert_no_cgroups(job, runner);
    report
}

/// Runs `spec` once as job `job`: its report (the one row it answers) and its runner.
pub(super) async fn run_attacker(
    job: &str,
    dir: &Path,
    spec: &FunctionSpec,
) -> (serde_json::Map<String, Value>, FunctionRunner) {
    let mut runner = test_runner(job, dir, spec);
    let output = runner
        .invoke(&batch(&["{}"]))
        .await
        .unwrap_or_else(|error| panic!("{job}: the attacker itself failed: {error}"));
    let rows = rows(&output);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let report = rows[0].as_object().cloned().expect("an object");
    (report, runner)
}

/// The attempts in `report` that were not refused.
pub(super) fn granted(report: &serde_json::Map<String, Value>) -> Vec<String> {
    report
        .iter()
        .filter(|(_, outcome)| !outcome.as_str().is_some_and(|o| o.starts_with("refused")))
        .map(|(name, outcome)| format!("{name}: {outcome}"))
        .collect()
}

/// Processes on the host whose command line contains `marker`.
pub(super) fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline).contains(marker) && !is_gone(*pid)
            })
        })
        .collect()
}

/// Lifts its memory and process limits, and starts a daemon that moves itself into the
/// root cgroups and `exec`s a sleeper with a unique argument.
pub(super) const LIFT_LIMITS_AND_LEAVE: &str = r#"
marker = sys.argv[1]
cgroups = {}
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.rstrip("\n").split(":", 2)
    for controller in controllers.split(","):
        cgroups[controller] = path
memory = "/sys/fs/cgroup/memory" + cgroups.get("memory", "/")
pids = "/sys/fs/cgroup/pids" + cgroups.get("pids", "/")
attempt("memory.limit_in_bytes", lambda: write(memory + "/memory.limit_in_bytes", "-1"))
attempt("memory.memsw.limit_in_bytes", lambda: write(memory + "/memory.memsw.limit_in_bytes", "-1"))
attempt("pids.max", lambda: write(pids + "/pids.max", "max"))
attempt("memory.max", lambda: write("/sys/fs/cgroup" + cgroups.get("", "/") + "/memory.max", "max"))
attempt("mkdir in the cgroup fs", lambda: os.mkdir(pids + "/escape-" + marker))
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        moved = []
        for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            try:
                write(root + "/cgroup.procs", "0")
                moved.append(root)
            except Exception:
                pass
        os.write(write_end, (json.dumps(moved) + "\n").encode())
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execvp("sleep", ["sleep", "1000." + marker])
    os._exit(0)
os.close(write_end)
moved = json.loads(os.fdopen(read_end).readline())
report["daemon moved to a root cgroup"] = "refused: stayed" if not moved else moved
"#;

#[tokio::test]
async fn a_function_cannot_lift_its_limits_leave_its_cgroup_or_outlive_its_instance() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let marker = format!("{}{}", std::process::id(), rand_suffix());
    let mut spec = attacker(LIFT_LIMITS_AND_LEAVE, &[&marker]);
    spec.memory = Some(64 << 20);
    spec.max_processes = 8;
    let report = attack("lift-limits", dir.path(), &spec).await;
    let survivors = wait_gone_with(&marker).await;
    for root in cgroups().map(|c| c.roots()).unwrap_or_default() {
        let _ = std::fs::remove_dir(root.join(format!("escape-{marker}")));
    }
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    assert!(
        survivors.is_empty(),
        "processes outlived their instance: {survivors:?}"
    );
    neighbour.assert_unaffected().await;
}

/// A number unique enough to tell this test's processes from others on the host.
pub(super) fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

/// Waits (bounded) until no process carries `marker`; returns those still there, killed.
pub(super) async fn wait_gone_with(marker: &str) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(marker);
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            for &pid in &left {
                let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) const TOUCH_ROOT_FILES: &str = r#"
vault_secret, binary, etc_probe = sys.argv[1], sys.argv[2], sys.argv[3]
attempt("read /etc/shadow", lambda: read("/etc/shadow"))
attempt("read a 0600 file in a 0700 root folder", lambda: read(vault_secret))
attempt("open a root-owned program for writing", lambda: os.close(os.open(binary, os.O_WRONLY)))
attempt("create a file in /etc", lambda: os.close(os.open(etc_probe, os.O_WRONLY | os.O_CREAT, 0o644)))
attempt("write /etc/hosts", lambda: os.close(os.open("/etc/hosts", os.O_WRONLY | os.O_APPEND)))
"#;

#[tokio::test]
async fn root_owned_files_are_neither_readable_nor_writable() {
    use std::os::unix::fs::PermissionsExt as _;
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let vault = job_dir();
    std::fs::set_permissions(vault.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = vault.path().join("secret");
    std::fs::write(&secret, "platform secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A stand-in for the platform's binary: root-owned, 0755, in a 0755 folder.
    let bin = job_dir();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = bin.path().join("sluice");
    std::fs::write(&binary, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let etc_probe = format!("/etc/sluice-attack-{}", std::process::id());

    let spec = attacker(
        TOUCH_ROOT_FILES,
        &[
            secret.to_str().unwrap(),
            binary.to_str().unwrap(),
            &etc_probe,
        ],
    );
    let report = attack("root-files", dir.path(), &spec).await;
    let _ = std::fs::remove_file(&etc_probe);
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    assert_eq!(std::fs::read_to_string(&binary).unwrap(), "#!/bin/sh\n");
    neighbour.assert_unaffected().await;
}

pub(super) const POSTGRES_SOCKET: &str = "/var/run/postgresql/.s.PGSQL.5432";

pub(super) const HOST_SOCKETS: &str = r#"
def connect_unix(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(path)
def connect_tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
attempt("PostgreSQL's Unix socket", lambda: connect_unix(sys.argv[1]))
attempt("PostgreSQL on 127.0.0.1:5432", lambda: connect_tcp(5432))
attempt("RabbitMQ on 127.0.0.1:5672", lambda: connect_tcp(5672))
def listing(path):
    entries = os.listdir(path)
    if not entries:
        raise FileNotFoundError(path + " is empty")
    return entries
attempt("list /run", lambda: listing("/run"))
"#;

#[tokio::test]
async fn network_false_cuts_host_unix_sockets_and_loopback_services() {
    // The host has the socket and it answers: otherwise the test would prove nothing.
    std::os::unix::net::UnixStream::connect(POSTGRES_SOCKET)
        .unwrap_or_else(|e| panic!("PostgreSQL must listen on {POSTGRES_SOCKET}: {e}"));
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let spec = attacker(HOST_SOCKETS, &[POSTGRES_SOCKET]);
    assert!(!spec.network);
    let report = attack("host-sockets", dir.path(), &spec).await;
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    neighbour.assert_unaffected().await;
}

/// Looks through every process it can see for the other job's secret, in its
/// environment and its command line, and for the platform's environment; then signals
/// the platform with a signal whose default is to be ignored (a SIGTERM goes through
/// the very same permission check).
pub(super) const SNOOP_AND_SIGNAL: &str = r#"
secret, platform = sys.argv[1], int(sys.argv[2])
found = []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    for part in ("environ", "cmdline"):
        try:
            with open("/proc/%s/%s" % (pid, part), "rb") as f:
                if secret.encode() in f.read():
                    found.append(part)
        except Exception:
            pass
report["the other job's secret"] = "refused: not found" if not found else sorted(set(found))
attempt("read the platform's environment", lambda: read("/proc/%d/environ" % platform))
attempt("signal the platform", lambda: os.kill(platform, signal.SIGURG))
"#;

#[tokio::test]
async fn another_jobs_environment_and_the_platform_are_out_of_reach() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    std::fs::write(dir.path().join("echo.py"), STREAM_ECHO).unwrap();
    let secret = format!("s3cr3t-{}-{}", std::process::id(), rand_suffix());
    let mut victim_spec = spec(
        &["python3", "echo.py", &format!("--token={secret}")],
        FunctionMode::Stream,
    );
    victim_spec.env.insert("SECRET".into(), secret.clone());
    let mut victim = test_runner("victim", dir.path(), &victim_spec);
    victim.invoke(&batch(&[r#"{"v":0}"#])).await.unwrap();

    let spec = attacker(
        SNOOP_AND_SIGNAL,
        &[&secret, &std::process::id().to_string()],
    );
    let report = attack("snoop", dir.path(), &spec).await;
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    let output = victim.invoke(&batch(&[r#"{"v":1}"#])).await.unwrap();
    assert_eq!(rows(&output)[0]["v"], 1);
    victim.shutdown().await;
    neighbour.assert_unaffected().await;
}

/// System calls a data function never needs, a set-uid program, and its private `/tmp`
/// filled past its cap.
pub(super) const KERNEL_ATTACKS: &str = r#"
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    if getattr(libc, name)(*args) == -1:
        raise OSError(ctypes.get_errno(), name)
victim = int(sys.argv[1])
attempt("ptrace another job's process", lambda: call("ptrace", 16, victim, None, None))
os.makedirs("/tmp/m", exist_ok=True)
attempt("mount a tmpfs", lambda: call("mount", b"tmpfs", b"/tmp/m", b"tmpfs", 0, None))
attempt("unshare a user namespace", lambda: call("unshare", 0x10000000))
attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)
attempt("create a BPF map", lambda: call("syscall", 321, 0, attr, ctypes.sizeof(attr)))
attempt("keyctl", lambda: call("syscall", 250, 0, 0, 0, 0, 0))
def setuid_mount():
    import subprocess
    done = subprocess.run(["mount", "-t", "tmpfs", "none", "/tmp/m"], capture_output=True)
    if done.returncode != 0:
        raise PermissionError(done.stderr.decode(errors="replace").strip())
attempt("mount through the set-uid mount program", setuid_mount)
def own_root_file():
    with open("/tmp/evil", "w") as f:
        f.write("x")
    os.chown("/tmp/evil", 0, 0)
attempt("give a file to root", own_root_file)
def fill_tmp():
    chunk = b"x" * (1 << 20)
    with open("/tmp/fill", "wb") as f:
        for _ in range(400):
            f.write(chunk)
            f.flush()
    return "wrote 400 MiB"
attempt("fill /tmp past its cap", fill_tmp)
"#;

#[tokio::test]
async fn kernel_interfaces_set_uid_programs_and_a_full_tmp_are_refused() {
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    let victim = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let spec = attacker(KERNEL_ATTACKS, &[&victim.id().to_string()]);
    let report = attack("kernel", dir.path(), &spec).await;
    let mut victim = victim;
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    neighbour.assert_unaffected().await;
}

/// Reaches for another job's bundle, scratch space and the platform's data folder.
const OTHER_JOBS_FILES: &str = r#"
bundle_file, victim, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
attempt("write the other job's bundle", lambda: os.close(os.open(bundle_file, os.O_WRONLY | os.O_APPEND)))
attempt("read the other job's bundle", lambda: read(bundle_file))
attempt("read the other job's scratch", lambda: read("/proc/%d/root/tmp/secret" % victim))
attempt("list the platform's data folder", lambda: os.listdir(data) and None)
attempt("create a file in the data folder", lambda: os.close(os.open(data + "/evil", os.O_WRONLY | os.O_CREAT, 0o644)))
"#;

/// Writes a secret into its private `/tmp`, then echoes like `STREAM_ECHO`.
const KEEPS_A_SECRET: &str = r#"
import json, os, sys
open("/tmp/secret", "w").write("the victim's scratch")
print(json.dumps({"$ready": True}), flush=True)
for line in sys.stdin:
    if not line.strip():
        print(json.dumps({"pid": os.getpid()}), flush=True)
        print(flush=True)
"#;

#[tokio::test]
async fn another_jobs_bundle_and_scratch_and_the_data_folder_are_out_of_reach() {
    let Ok(_) = isolation::isolation().function_ids else {
        eprintln!("functions cannot get users of their own here; nothing to check");
        return;
    };
    let neighbour = Neighbour::start().await;
    let dir = job_dir();
    std::fs::write(dir.path().join("secret.py"), KEEPS_A_SECRET).unwrap();
    let mut victim = test_runner(
        "victim-files",
        dir.path(),
        &spec(&["python3", "secret.py"], FunctionMode::Stream),
    );
    victim.invoke(&batch(&["{}"])).await.unwrap();
    let victim_pid = victim.warm_pid().unwrap();
    let data = Path::new(bundle::DEFAULT_DATA_DIR)
        .join("functions")
        .join(std::process::id().to_string());
    let bundle_file = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("victim-files."))
        })
        .expect("the victim's bundle is staged")
        .join("bundle/secret.py");
    let spec = attacker(
        OTHER_JOBS_FILES,
        &[
            bundle_file.to_str().unwrap(),
            &victim_pid.to_string(),
            data.to_str().unwrap(),
        ],
    );
    let report = attack("files", dir.path(), &spec).await;
    assert_eq!(granted(&report), Vec::<String>::new(), "{report:?}");
    assert_eq!(
        std::fs::read_to_string(&bundle_file).unwrap(),
        KEEPS_A_SECRET
    );
    victim.invoke(&batch(&["{}"])).await.unwrap();
    victim.shutdown().await;
    neighbour.assert_unaffected().await;
}
