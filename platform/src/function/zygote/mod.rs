//! Preload ("zygote") for Python functions: with `function.preload`, one parent
//! interpreter per job imports the named modules once, then forks instances on demand, so
//! heavy imports (pyarrow, pandas) are paid once, not per instance.
//!
//! ```text
//! platform ──spawn (sandbox.rs, like any instance)──▶ zygote: python3 -c zygote.py
//!     │   control socket (SOCK_SEQPACKET, fd 0)        │ imports the modules; {"ready": true}
//!     ├── {"op":"fork"} + pipes (SCM_RIGHTS) ─────────▶ fork ─▶ relay: own process group,
//!     │◀─ {"pid": P} ─────────────────────────────────┘        waits for "go"
//!     ├── moves P into the instance's cgroup, writes "go" ─────▶ pipes as fds 0-2; mount
//!     │                                                          and PID namespaces,
//!     │                                                          private /tmp;
//!     │               init (pid 1, native) ◀─ posix_spawn ──────┤
//!     │               function (pid 2) ◀───── fork ─────────────┘ /proc, no capabilities,
//!     │                                                          full filter, cleared env,
//!     │                                                          runpy.run_path(script)
//!     │◀─ {"exited": P, "status": S} (P, ending as the function did, kept as a zombie
//!     │    until the platform releases it)
//! ```
//!
//! Isolation of a forked instance, against a spawned one (`sandbox.rs`):
//! - inherited from the zygote, which is spawned through the very same sandbox code: the
//!   rlimits (open files, CPU seconds counted from zero at fork, no core dumps, address
//!   space when no memory cgroup), `PR_SET_NO_NEW_PRIVS`, the job's own user, the mount
//!   namespace's view (the bundle read-only as working directory, hidden cgroup file
//!   system and host sockets) and the network namespace (loopback only when
//!   `network = false`). One difference: the instances of a job share the zygote's
//!   network namespace, so they can reach each other's loopback ports.
//! - made per instance by the zygote, where the host allows it
//!   ([`Isolation::forks_get_namespaces`](super::isolation::Isolation::forks_get_namespaces)):
//!   the zygote runs in a user namespace of its own ([`super::user_namespace`]) with
//!   `CAP_SYS_ADMIN` there only, under the system call filter minus `mount` and
//!   `unshare` of mount and PID namespaces ([`super::syscalls`]). After "go", the forked
//!   child (the relay, the instance's leader in the platform's PID namespace, so the pids
//!   the zygote reports are the platform's) makes a mount and a PID namespace, mounts a
//!   private `/tmp` (also `/var/tmp`, 256 MiB, empty) and `/dev/shm`, starts init and
//!   forks the function, exactly the shape of a spawned instance (`pid_namespace.rs`);
//!   the function mounts a `/proc` of its namespace, drops every capability and puts
//!   itself under the full filter before the script runs (it adds to the zygote's filter,
//!   which it inherits, only what that one lacks: [`SyscallFilter::instance_programs`]).
//!   Init is a small static program ([`super::init_program`], built by `platform/build.rs`),
//!   handed to the zygote as a sealed, execute-only memory file with each fork request
//!   and started by the relay with `posix_spawn` (a `vfork` and an `exec`), so the only
//!   copy of the interpreter per instance besides the relay is the function;
//!   execute-only, it is not dumpable, so the function cannot see it or touch its
//!   memory. What relay and function need per instance (C library symbols, mount
//!   options, filter programs) the zygote prepares once, before forking. So an instance
//!   sees only its own processes, cannot name its siblings or the zygote, and sees only
//!   its own `/tmp`; when the relay ends or is killed, init dies and with it everything
//!   left in the namespace. Relay and init join the instance's cgroup with the function
//!   (its `pids.max` has room for them, [`FORK_HELPERS`]). Where the host refuses a user
//!   namespace to the job's user, instances share the zygote's PID namespace and `/tmp`,
//!   and the protection is named as missing (`function.isolation`).
//! - per instance besides: its own process group (the relay's pid), its own cgroup (the
//!   platform moves the relay there before it runs any function code, so `max_processes`
//!   and `memory` hold and a kill reaches everything it starts), exactly the environment
//!   a spawned instance gets (`sandbox::instance_environment`), its own
//!   stdin/stdout/stderr pipes, no other file descriptor, the zygote's working directory,
//!   and `PR_SET_PDEATHSIG` so it dies with the zygote, which dies with the platform.
//! - the zygote is non-dumpable, so instances cannot read its memory or trace it. The
//!   preload modules' import runs in the zygote, with its looser filter and its
//!   capability in its own user namespace: code run at import can make mount and PID
//!   namespaces there and mount in them, but cannot change or remove the mounts the
//!   platform made for it (the kernel locks them), and holds no privilege outside.
//!
//! Lifecycle: a [`Zygote`] handle is shared by every runner of a job in this process
//! ([`Zygote::for_job`]); the process starts with the first instance, and is restarted by
//! the next instance start after it died (a start fails with
//! [`InvokeError::Preload`] when it cannot be). Its time to import is bounded by
//! `function.timeout`. When the last handle goes, the zygote is killed; its instances die
//! with it.
//!
//! Invariants: a forked instance is a [`FunctionProcess`] like a spawned one (timeout,
//! kill of its group and cgroup, exit status, stderr log); it never runs function code
//! outside its cgroup; its pid cannot be reused while its `FunctionProcess` exists.

mod control;

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use control::ControlChannel;
pub(crate) use control::ForkedLeader;

use super::isolation::isolation;
use super::namespaces::{SCRATCH_SIZE, SHM_SIZE};
use super::protocol::InvokeError;
use super::sandbox::{
    FunctionProcess, InstanceContext, ProcessPipes, instance_cgroup, instance_environment,
};
use super::syscalls::SyscallFilter;
use crate::spec::FunctionSpec;

/// The zygote program, passed to the interpreter with `-c`.
const ZYGOTE_SOURCE: &str = include_str!("zygote.py");
/// How long one fork request may take (a fork of a large interpreter takes milliseconds).
const FORK_BOUND: Duration = Duration::from_secs(10);
/// How long a failed zygote gets to be reaped.
const REAP_BOUND: Duration = Duration::from_secs(5);
/// Processes the zygote's cgroup allows beyond `function.max_processes`: a forked child
/// counts there until the platform has moved it into its own cgroup.
const SPARE_PROCESSES: u64 = 16;
/// Processes of a forked instance with namespaces of its own besides the function: its
/// relay and the init of its PID namespace.
const FORK_HELPERS: u64 = 2;

/// Live zygote handles of this process, by job and folder.
type Registry = HashMap<(String, PathBuf), Weak<Zygote>>;
static ZYGOTES: Mutex<Option<Registry>> = Mutex::new(None);

/// A job's preload parent: started on first use, restarted after it dies.
#[derive(Debug)]
pub(crate) struct Zygote {
    job: String,
    spec: FunctionSpec,
    running: tokio::sync::Mutex<Option<RunningZygote>>,
    /// Zygote processes started so far, to name them.
    starts: AtomicU64,
}

#[derive(Debug)]
struct RunningZygote {
    id: String,
    process: FunctionProcess,
    channel: Arc<ControlChannel>,
}

impl Zygote {
    /// The shared handle for `job` in folder `dir`, whose function `spec` has a non-empty
    /// `preload`. A handle made for a different spec is not shared (the job changed).
    pub(crate) fn for_job(job: &str, dir: &Path, spec: &FunctionSpec) -> Arc<Zygote> {
        let mut zygotes = ZYGOTES.lock().unwrap_or_else(PoisonError::into_inner);
        let zygotes = zygotes.get_or_insert_with(HashMap::new);
        zygotes.retain(|_, zygote| zygote.strong_count() > 0);
        let key = (job.to_owned(), dir.to_path_buf());
        if let Some(existing) = zygotes.get(&key).and_then(Weak::upgrade)
            && existing.spec == *spec
        {
            return existing;
        }
        let zygote = Arc::new(Zygote {
            job: job.to_owned(),
            spec: spec.clone(),
            running: tokio::sync::Mutex::new(None),
            starts: AtomicU64::new(0),
        });
        zygotes.insert(key, Arc::downgrade(&zygote));
        zygote
    }

    /// The running zygote's pid, if one runs.
    #[cfg(test)]
    pub(crate) async fn pid(&self) -> Option<u32> {
        let running = self.running.lock().await;
        running.as_ref().map(|running| running.process.pid())
    }

    /// Forks an instance for `context` (its `zygote` is this one), starting or restarting
    /// the zygote first when needed.
    pub(crate) async fn fork(
        &self,
        context: &InstanceContext<'_>,
    ) -> Result<(FunctionProcess, ProcessPipes), InvokeError> {
        let spawned_at = Instant::now();
        let channel = self.running_channel(context).await?;
        // With namespaces of its own, an instance's relay and init join its cgroup first
        // and do not count against function.max_processes; its relay starts the init
        // program the platform hands over with the request.
        let init = if forks_get_namespaces(context) {
            Some(super::init_program::sealed().map_err(|reason| InvokeError::Sandbox { reason })?)
        } else {
            None
        };
        let helpers = if init.is_some() { FORK_HELPERS } else { 0 };
        let cgroup = instance_cgroup(context, helpers)?;
        let sandbox_error = |what: &str, error: std::io::Error| InvokeError::Sandbox {
            reason: format!("cannot {what} for a forked instance: {error}"),
        };
        let pipe = || std::io::pipe().map_err(|error| sandbox_error("create pipes", error));
        let (stdin_read, stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        let (go_read, mut go_write) = pipe()?;
        let passed: [OwnedFd; 4] = [
            stdin_read.into(),
            stdout_write.into(),
            stderr_write.into(),
            go_read.into(),
        ];
        let env = instance_environment(context);
        let leader = channel
            .fork(&env, passed, init, FORK_BOUND)
            .await
            .map_err(|reason| InvokeError::Preload {
                reason,
                stderr_tail: String::new(),
                permanent: false,
            })?;
        let pid = leader.pid();
        // Until "go", the child runs no function code; on any error here it reads end of
        // file instead and exits, and the kill makes sure of it.
        let go = match &cgroup {
            Some(cgroup) => cgroup
                .adopt(pid)
                .map_err(|error| sandbox_error("move the process into its cgroup", error)),
            None => Ok(()),
        }
        .and_then(|()| {
            go_write
                .write_all(b"g")
                .map_err(|error| sandbox_error("start the process", error))
        });
        drop(go_write);
        if let Err(error) = go {
            let _ = killpg(pid, Signal::SIGKILL);
            return Err(error);
        }
        let io_error = |error| sandbox_error("set up the pipes", error);
        let stdin =
            ChildStdin::from_std(std::process::ChildStdin::from(OwnedFd::from(stdin_write)))
                .map_err(io_error)?;
        let stdout =
            ChildStdout::from_std(std::process::ChildStdout::from(OwnedFd::from(stdout_read)))
                .map_err(io_error)?;
        let stderr =
            ChildStderr::from_std(std::process::ChildStderr::from(OwnedFd::from(stderr_read)))
                .map_err(io_error)?;
        let process = FunctionProcess::forked(context, leader, cgroup, stderr, spawned_at);
        Ok((process, ProcessPipes { stdin, stdout }))
    }

    /// The control channel of a running zygote, started (or restarted) when needed.
    async fn running_channel(
        &self,
        context: &InstanceContext<'_>,
    ) -> Result<Arc<ControlChannel>, InvokeError> {
        let mut running = self.running.lock().await;
        if let Some(mut dead) =
            running.take_if(|zygote| zygote.channel.is_closed() || zygote.process.has_exited())
        {
            dead.process.kill_and_reap(REAP_BOUND).await;
            let stderr = dead.process.stderr_tail().await;
            tracing::warn!(
                job = self.job,
                zygote = dead.id,
                stderr,
                "preload process exited; starting a new one"
            );
            dead.process.release().await;
        }
        if let Some(zygote) = running.as_ref() {
            return Ok(Arc::clone(&zygote.channel));
        }
        let zygote = self.start(context).await?;
        let channel = Arc::clone(&zygote.channel);
        *running = Some(zygote);
        Ok(channel)
    }

    /// Spawns a zygote through the sandbox and waits for it to import its modules.
    async fn start(&self, context: &InstanceContext<'_>) -> Result<RunningZygote, InvokeError> {
        let started = Instant::now();
        let number = self.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-preload-{number}", self.job);
        let spec = zygote_spec(&self.spec, instance_namespaces(context))?;
        let zygote_context = InstanceContext {
            job: context.job,
            instance: &id,
            dir: context.dir,
            spec: &spec,
            job_cgroup: context.job_cgroup,
            zygote: None,
            secrets: context.secrets,
            sandbox: context.sandbox,
        };
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|errno| InvokeError::Sandbox {
            reason: format!("cannot create the preload process's control socket: {errno}"),
        })?;
        let (mut process, _, _) =
            FunctionProcess::spawn_with_stdio(&zygote_context, Stdio::from(theirs), Stdio::null())?;
        let (channel, ready) =
            ControlChannel::start(ours).map_err(|error| InvokeError::Sandbox {
                reason: format!("cannot start the preload process's reader thread: {error}"),
            })?;
        let bound = self.spec.timeout;
        let failure = tokio::select! {
            ready = ready => match ready {
                Ok(()) => None,
                // The socket closed: the process is exiting; its status tells why.
                Err(_closed) => Some(match tokio::time::timeout(REAP_BOUND, process.wait()).await {
                    Ok(Ok(status)) => exited(status),
                    _ => ("closed its control socket while importing".to_owned(), false),
                }),
            },
            status = process.wait() => Some(match status {
                Ok(status) => exited(status),
                Err(error) => (format!("could not be waited for: {error}"), false),
            }),
            () = tokio::time::sleep(bound) => Some((
                format!("did not import its modules within function.timeout = {bound:?}"),
                false,
            )),
        };
        if let Some((reason, permanent)) = failure {
            process.kill_and_reap(REAP_BOUND).await;
            let stderr_tail = process.stderr_tail().await;
            process.release().await;
            return Err(InvokeError::Preload {
                reason,
                stderr_tail,
                permanent,
            });
        }
        tracing::info!(
            job = self.job,
            zygote = id,
            pid = process.pid(),
            modules = ?self.spec.preload,
            import_ms = started.elapsed().as_millis() as u64,
            "preload process ready"
        );
        Ok(RunningZygote {
            id,
            process,
            channel,
        })
    }
}

/// Why a zygote that ended before it was ready failed, and whether a retry would fail the
/// same way (an exit with a code: an import raised; a signal may be a limit or a kill).
fn exited(status: std::process::ExitStatus) -> (String, bool) {
    match status.code() {
        Some(code) => (
            format!("exited with code {code} while importing the modules"),
            code != 0,
        ),
        None => (
            format!("ended while importing the modules ({status})"),
            false,
        ),
    }
}

/// Whether the zygote gives each instance it forks namespaces of its own: when the host
/// allows it ([`super::user_namespace`]) and the instance runs as the job's user.
fn forks_get_namespaces(context: &InstanceContext<'_>) -> bool {
    context.sandbox.is_some() && isolation().forks_get_namespaces(true)
}

/// What the zygote needs to give each instance it forks namespaces of its own (the
/// job's ids, the scratch sizes, the system call filter to install), when
/// [`forks_get_namespaces`]; `None` when instances share its namespaces. Sent once, when
/// the zygote starts.
fn instance_namespaces(context: &InstanceContext<'_>) -> Option<serde_json::Value> {
    let isolation = isolation();
    let sandbox = context.sandbox.filter(|_| forks_get_namespaces(context))?;
    Some(serde_json::json!({
        "uid": sandbox.identity.uid,
        "gid": sandbox.identity.gid,
        "scratch_size": SCRATCH_SIZE,
        "shm_size": SHM_SIZE,
        "seccomp": isolation
            .syscall_filter
            .as_ref()
            .ok()
            .map(SyscallFilter::instance_programs),
    }))
}

/// The zygote's own spec: the job's, with the command replaced by the zygote program, and
/// room in its cgroup for children not yet moved to their own. `namespaces` is what
/// [`instance_namespaces`] says.
fn zygote_spec(
    job_spec: &FunctionSpec,
    namespaces: Option<serde_json::Value>,
) -> Result<FunctionSpec, InvokeError> {
    let [interpreter, script, args @ ..] = job_spec.command.as_slice() else {
        return Err(InvokeError::Preload {
            reason: "needs a command of the form [python, script, args...]".into(),
            stderr_tail: String::new(),
            permanent: true,
        });
    };
    let config = serde_json::json!({
        "script": script,
        "args": args,
        "preload": job_spec.preload,
        "namespaces": namespaces,
    });
    let mut spec = job_spec.clone();
    spec.command = vec![
        interpreter.clone(),
        "-c".into(),
        ZYGOTE_SOURCE.into(),
        config.to_string(),
    ];
    spec.max_processes = spec.max_processes.saturating_add(SPARE_PROCESSES);
    Ok(spec)
}
