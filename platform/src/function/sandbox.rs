//! Starting a function process in its sandbox, and owning it until it is gone.
//!
//! Each process gets:
//! - when the platform runs as root, the job's own uid and gid ([`super::identity`]) and
//!   its read-only bundle ([`super::bundle`]) as working directory, with a private `/tmp`
//!   ([`super::namespaces`]) or else a scratch folder as `TMPDIR` and `HOME`; otherwise
//!   the job folder. A relative program path resolves against the working directory (a
//!   bare name when a file of that name is there, else looked up on `PATH`);
//! - a cleared environment: only `PATH` (the platform's, or a default), `HOME` and `LANG`
//!   when the platform has them, the job's declared `env`, and `SLUICE_JOB`,
//!   `SLUICE_INSTANCE`, `SLUICE_MODE`, `SLUICE_ENCODING`;
//! - its own process group, so one `killpg` reaches every process it started that stayed
//!   in the group;
//! - when cgroups are usable, a cgroup of its own ([`super::cgroup`]) joined before `exec`:
//!   `function.max_processes` and `function.memory` are enforced by the kernel there, and
//!   every process of the instance is killed when it ends, even ones that left the group;
//! - `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the platform (the signal follows the
//!   thread that spawned it; runtime worker threads live as long as the runtime);
//! - resource limits: `RLIMIT_NOFILE` (open files), `RLIMIT_CPU` (CPU seconds, counted per
//!   process over its whole life), no core dumps, and `RLIMIT_AS` for memory when no memory
//!   cgroup enforces it;
//! - with a mount namespace, a PID namespace of its own ([`super::pid_namespace`]): the
//!   process the platform holds is a relay that ends as the function does;
//! - a network namespace of its own unless the job allows network, no capabilities, and
//!   `PR_SET_NO_NEW_PRIVS` ([`super::isolation`]);
//! - no open descriptor but its three pipes: every other one closes at `exec`.
//!
//! With `function.preload`, [`FunctionProcess::start`] forks the instance from the job's
//! zygote instead ([`super::zygote`]): the zygote itself is spawned here like any
//! instance, but without a PID namespace of its own and, where the host allows it, in a
//! user namespace of its own ([`super::user_namespace`]) under a looser system call
//! filter; its children inherit that sandbox and get the per-instance parts (process
//! group, cgroup, PID and mount namespaces, the full filter, [`instance_environment`],
//! pipes) there. A forked process is the same [`FunctionProcess`]; only who reaps its
//! leader differs ([`Leader`]).
//!
//! Invariant: while a [`FunctionProcess`] exists, its process group and cgroup are ours to
//! kill; both are killed when the value is dropped before the process was released.
//! stderr is read by a task for the life of the process ([`super::stderr`]).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

pub(crate) use super::bundle::JobSandbox;
use super::bundle::remove_scratch;
use super::cgroup::{CgroupKiller, CgroupLimits, InstanceCgroup, JobCgroup, LimitEvents};
pub(crate) use super::environment::instance_environment;
use super::protocol::{InvokeError, MemoryEnforcement};
use super::spawn_command::build_command;
use super::stderr::StderrLog;
use super::zygote::{ForkedLeader, Zygote};
use crate::spec::FunctionSpec;
use crate::spec::secret::Secrets;

/// How long to wait for stderr to close once the process group is gone.
const STDERR_DRAIN: Duration = Duration::from_secs(2);
/// What runtimes write to stderr when an allocation fails (Python, C++, libc `perror`,
/// Go, the JVM, Rust).
const ALLOCATION_FAILURES: [&str; 6] = [
    "MemoryError",
    "bad_alloc",
    "Cannot allocate memory",
    "out of memory",
    "OutOfMemoryError",
    "memory allocation of",
];

/// Who a process is: the job, the instance id, the function settings, and the job's
/// cgroup when instances get one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstanceContext<'a> {
    pub(crate) job: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) dir: &'a Path,
    pub(crate) spec: &'a FunctionSpec,
    pub(crate) job_cgroup: Option<&'a Arc<JobCgroup>>,
    /// The job's preload parent, when `function.preload` is set: instances are forked
    /// from it instead of spawned ([`super::zygote`]).
    pub(crate) zygote: Option<&'a Zygote>,
    /// The job's secrets, masked in the stderr lines logged and quoted.
    pub(crate) secrets: &'a Secrets,
    /// The job's user and bundle, when instances run as a user of their own.
    pub(crate) sandbox: Option<&'a JobSandbox>,
}

/// The first process of an instance: a child of the platform, or one forked by the job's
/// zygote.
#[derive(Debug)]
enum Leader {
    Spawned(Child),
    Forked(ForkedLeader),
}

impl Leader {
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Leader::Spawned(child) => child.wait().await,
            Leader::Forked(forked) => forked.wait().await,
        }
    }

    fn has_exited(&mut self) -> bool {
        match self {
            Leader::Spawned(child) => matches!(child.try_wait(), Ok(Some(_))),
            Leader::Forked(forked) => forked.try_wait().is_some(),
        }
    }
}

/// The instance's own cgroup, when the job has one, with room for `helpers` processes of
/// the platform's beyond `function.max_processes`.
pub(crate) fn instance_cgroup(
    context: &InstanceContext<'_>,
    helpers: u64,
) -> Result<Option<InstanceCgroup>, InvokeError> {
    let spec = context.spec;
    context
        .job_cgroup
        .map(|job| {
            let limits = CgroupLimits {
                max_processes: spec.max_processes.saturating_add(helpers),
                memory: spec.memory,
            };
            job.create_instance(context.instance, limits)
                .map_err(|error| InvokeError::Sandbox {
                    reason: format!("cannot create the instance's cgroup: {error}"),
                })
        })
        .transpose()
}

/// `function.memory` and how it is enforced for an instance in `cgroup`.
fn memory_enforcement(
    spec: &FunctionSpec,
    cgroup: Option<&InstanceCgroup>,
) -> Option<(u64, MemoryEnforcement)> {
    spec.memory.map(|limit| {
        let enforcement = if cgroup.is_some_and(InstanceCgroup::limits_memory) {
            MemoryEnforcement::Cgroup
        } else {
            MemoryEnforcement::AddressSpace
        };
        (limit, enforcement)
    })
}

/// A running function process, its group, its cgroup and its stderr log.
#[derive(Debug)]
pub(crate) struct FunctionProcess {
    leader: Leader,
    /// Process group id (the leader's pid).
    group: Pid,
    cgroup: Option<InstanceCgroup>,
    stderr: StderrLog,
    spawned_at: Instant,
    reaped: bool,
    /// `function.memory` and how it is enforced, for error messages.
    memory: Option<(u64, MemoryEnforcement)>,
    max_processes: u64,
    /// The cgroup's counters when the current batch began.
    events_at_batch_start: LimitEvents,
    /// The scratch folder made for the process, removed when it is released.
    scratch: Option<PathBuf>,
}

/// The pipes to a process's stdin and stdout.
#[derive(Debug)]
pub(crate) struct ProcessPipes {
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
}

impl FunctionProcess {
    /// Starts the function for `context` in its sandbox: forked from the job's zygote
    /// when it has one, else spawned.
    pub(crate) async fn start(
        context: &InstanceContext<'_>,
    ) -> Result<(FunctionProcess, ProcessPipes), InvokeError> {
        match context.zygote {
            Some(zygote) => zygote.fork(context).await,
            None => Self::spawn(context),
        }
    }

    /// Spawns the function for `context` in its sandbox.
    pub(crate) fn spawn(
        context: &InstanceContext<'_>,
    ) -> Result<(FunctionProcess, ProcessPipes), InvokeError> {
        let (process, stdin, stdout) =
            Self::spawn_with_stdio(context, Stdio::piped(), Stdio::piped())?;
        match (stdin, stdout) {
            (Some(stdin), Some(stdout)) => Ok((process, ProcessPipes { stdin, stdout })),
            _ => Err(InvokeError::Spawn {
                command: context.spec.command.join(" "),
                source: io::Error::other("spawned process is missing a pipe"),
            }),
        }
    }

    /// Spawns the function for `context` in its sandbox with the given stdin and stdout
    /// (stderr is always logged); the pipes are returned for those that are piped.
    pub(crate) fn spawn_with_stdio(
        context: &InstanceContext<'_>,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<(FunctionProcess, Option<ChildStdin>, Option<ChildStdout>), InvokeError> {
        let spec = context.spec;
        let spawn_error = |source: io::Error| InvokeError::Spawn {
            command: spec.command.join(" "),
            source,
        };
        let cgroup = instance_cgroup(context, 0)?;
        let (mut command, scratch) = build_command(context, cgroup.as_ref())?;
        command.stdin(stdin).stdout(stdout);
        let spawned_at = Instant::now();
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                remove_scratch(scratch.as_deref());
                return Err(spawn_error(error));
            }
        };
        let (Some(pid), Some(stderr)) = (child.id(), child.stderr.take()) else {
            return Err(spawn_error(io::Error::other(
                "spawned process is missing its pid or stderr",
            )));
        };
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let group = Pid::from_raw(pid as i32);
        let mut process = Self::assemble(
            context,
            Leader::Spawned(child),
            group,
            cgroup,
            stderr,
            spawned_at,
        );
        process.scratch = scratch;
        Ok((process, stdin, stdout))
    }

    /// A process forked by the job's zygote, already in its own process group (its pid)
    /// and in `cgroup`.
    pub(crate) fn forked(
        context: &InstanceContext<'_>,
        leader: ForkedLeader,
        cgroup: Option<InstanceCgroup>,
        stderr: ChildStderr,
        spawned_at: Instant,
    ) -> FunctionProcess {
        let group = leader.pid();
        Self::assemble(
            context,
            Leader::Forked(leader),
            group,
            cgroup,
            stderr,
            spawned_at,
        )
    }

    fn assemble(
        context: &InstanceContext<'_>,
        leader: Leader,
        group: Pid,
        cgroup: Option<InstanceCgroup>,
        stderr: ChildStderr,
        spawned_at: Instant,
    ) -> FunctionProcess {
        FunctionProcess {
            leader,
            group,
            events_at_batch_start: LimitEvents::default(),
            memory: memory_enforcement(context.spec, cgroup.as_ref()),
            cgroup,
            stderr: StderrLog::start(stderr, context.job, context.instance, context.secrets),
            spawned_at,
            reaped: false,
            max_processes: context.spec.max_processes,
            scratch: None,
        }
    }

    /// The leader's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.group.as_raw() as u32
    }

    pub(crate) fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// A handle that signals the process group (and kills the cgroup) while the process
    /// itself is borrowed.
    pub(crate) fn group(&self) -> ProcessGroup {
        ProcessGroup {
            group: self.group,
            cgroup: self.cgroup.as_ref().and_then(InstanceCgroup::killer),
        }
    }

    /// SIGKILL to the whole group and to everything in the cgroup: the function and
    /// anything it started.
    pub(crate) fn kill_group(&self) {
        self.group().kill();
    }

    /// Waits for the leader to exit. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.leader.wait().await?;
        self.reaped = true;
        Ok(status)
    }

    /// Whether the leader has exited (it is reaped if so). Does not wait.
    pub(crate) fn has_exited(&mut self) -> bool {
        if !self.reaped && self.leader.has_exited() {
            self.reaped = true;
        }
        self.reaped
    }

    /// Kills the group and reaps the leader, waiting at most `bound` for it to go.
    pub(crate) async fn kill_and_reap(&mut self, bound: Duration) {
        self.kill_group();
        if self.reaped {
            return;
        }
        if tokio::time::timeout(bound, self.wait()).await.is_err() {
            tracing::warn!(
                pid = self.pid(),
                "function process did not exit after SIGKILL; leaving it to the reaper"
            );
        }
    }

    /// Marks the start of a batch: limit counters are compared against this point.
    pub(crate) fn begin_batch(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            self.events_at_batch_start = cgroup.events();
        }
    }

    /// Marks the end of a batch: reports stderr lines suppressed during it.
    pub(crate) fn end_batch(&self) {
        self.stderr.end_batch();
    }

    /// Kills whatever is left of the instance and removes its cgroup (bounded). The
    /// process must not be used afterwards.
    pub(crate) async fn release(&mut self) {
        self.kill_group();
        if let Some(cgroup) = self.cgroup.as_mut() {
            cgroup.remove().await;
        }
        remove_scratch(self.scratch.take().as_deref());
    }

    /// The last lines the process wrote to stderr, once stderr has closed (or after a
    /// short wait, if something still holds it open).
    pub(crate) async fn stderr_tail(&mut self) -> String {
        self.stderr.finish(STDERR_DRAIN).await
    }

    /// The error for a process that exited unsuccessfully with `status`.
    pub(crate) async fn failure(&mut self, status: ExitStatus) -> InvokeError {
        use std::os::unix::process::ExitStatusExt as _;
        let stderr_tail = self.stderr_tail().await;
        match (status.code(), status.signal()) {
            (Some(code), _) => InvokeError::Exit { code, stderr_tail },
            (None, Some(signal)) => InvokeError::Killed {
                signal,
                stderr_tail,
            },
            (None, None) => InvokeError::Io(io::Error::other(format!(
                "function ended with an unknown status {status}"
            ))),
        }
    }

    /// Names the limit behind a failure, when one was hit during this batch: the memory
    /// limit (an OOM kill in the cgroup, or a failed allocation reported on stderr under
    /// `RLIMIT_AS`) or the process limit. Call it after the instance was killed, so its
    /// stderr is closed. Other errors are returned as they are.
    pub(crate) async fn explain(&mut self, error: InvokeError) -> InvokeError {
        let stderr_tail = match &error {
            InvokeError::Exit { stderr_tail, .. } | InvokeError::Killed { stderr_tail, .. } => {
                Some(stderr_tail.clone())
            }
            InvokeError::Timeout { .. } | InvokeError::Protocol { .. } | InvokeError::Io(_) => None,
            _ => return error,
        };
        let events = self
            .cgroup
            .as_ref()
            .map_or(LimitEvents::default(), |cgroup| {
                let now = cgroup.events();
                LimitEvents {
                    oom_kills: now
                        .oom_kills
                        .saturating_sub(self.events_at_batch_start.oom_kills),
                    process_limit_hits: now
                        .process_limit_hits
                        .saturating_sub(self.events_at_batch_start.process_limit_hits),
                }
            });
        let allocation_failed = stderr_tail.as_deref().is_some_and(|tail| {
            ALLOCATION_FAILURES
                .iter()
                .any(|pattern| tail.contains(pattern))
        });
        let memory_hit = match self.memory {
            Some((limit, MemoryEnforcement::Cgroup)) if events.oom_kills > 0 => {
                Some((limit, MemoryEnforcement::Cgroup))
            }
            Some((limit, MemoryEnforcement::AddressSpace)) if allocation_failed => {
                Some((limit, MemoryEnforcement::AddressSpace))
            }
            _ => None,
        };
        if memory_hit.is_none() && events.process_limit_hits == 0 {
            return error;
        }
        let stderr_tail = match stderr_tail {
            Some(tail) => tail,
            None => self.stderr_tail().await,
        };
        match memory_hit {
            Some((limit, enforcement)) => InvokeError::MemoryLimit {
                limit,
                enforcement,
                stderr_tail,
            },
            None => InvokeError::ProcessLimit {
                limit: self.max_processes,
                stderr_tail,
            },
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
        }
        remove_scratch(self.scratch.take().as_deref());
        // The cgroup, if not removed yet, kills what is left and removes itself on drop.
    }
}

/// A function's process group and cgroup, for signalling them.
#[derive(Debug, Clone)]
pub(crate) struct ProcessGroup {
    group: Pid,
    cgroup: Option<CgroupKiller>,
}

impl ProcessGroup {
    /// Sends `signal` to every process in the group. A group that is already gone is fine.
    pub(crate) fn signal(&self, signal: Signal) {
        // After the leader is reaped its pid stays reserved as long as any member of the
        // group lives, so this cannot reach an unrelated group while stragglers remain.
        if let Err(errno) = killpg(self.group, signal)
            && errno != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pgid = self.group.as_raw(), %errno, ?signal, "failed to signal function process group");
        }
    }

    /// SIGKILL to the whole group, and to every process in the cgroup, which includes
    /// those that left the group.
    pub(crate) fn kill(&self) {
        self.signal(Signal::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
    }
}
