//! Starting a function process in its sandbox, and owning it until it is gone.
//!
//! Each process gets:
//! - the job folder as working directory; a relative program path resolves against it
//!   (a bare name is taken from the job folder when a file of that name is there, else
//!   looked up on `PATH`);
//! - a cleared environment: only `PATH` (the platform's, or a default), `HOME` and `LANG`
//!   when the platform has them, the job's declared `env`, and `SLUICE_JOB`,
//!   `SLUICE_INSTANCE`, `SLUICE_MODE`, `SLUICE_ENCODING`;
//! - its own process group, so one `killpg` reaches every process it started;
//! - `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the platform (the signal follows the
//!   thread that spawned it; runtime worker threads live as long as the runtime);
//! - resource limits: `RLIMIT_AS` (memory), `RLIMIT_NOFILE` (open files), `RLIMIT_CPU`
//!   (CPU seconds, counted per process over its whole life) and no core dumps.
//!
//! Invariant: while a [`FunctionProcess`] exists, its process group is ours to kill; it is
//! killed when the value is dropped before the process was reaped. stderr is read by a
//! task for the life of the process: every line is logged with job and instance, and the
//! last few KiB are kept for error messages.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use super::protocol::InvokeError;
use crate::spec::{FunctionMode, FunctionSpec};

/// `PATH` for the function when the platform has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Longest stderr line logged; the rest of a longer line is dropped.
const MAX_STDERR_LINE: usize = 8 * 1024;
/// How much of the end of stderr error messages quote.
const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// How long to wait for stderr to close once the process group is gone.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// Who a process is: the job, the instance id and the function settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstanceContext<'a> {
    pub(crate) job: &'a str,
    pub(crate) instance: &'a str,
    pub(crate) dir: &'a Path,
    pub(crate) spec: &'a FunctionSpec,
}

/// Builds the sandboxed command for `context` (stdio piped, nothing started yet).
pub(crate) fn build_command(context: &InstanceContext<'_>) -> Result<Command, InvokeError> {
    let spec = context.spec;
    let Some((program, args)) = spec.command.split_first() else {
        return Err(InvokeError::Spawn {
            command: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "function command is empty"),
        });
    };
    let mut command = Command::new(resolve_program(context.dir, program));
    command.args(args).current_dir(context.dir).env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    for inherited in ["HOME", "LANG"] {
        if let Some(value) = std::env::var_os(inherited) {
            command.env(inherited, value);
        }
    }
    command
        .envs(&spec.env)
        .env("SLUICE_JOB", context.job)
        .env("SLUICE_INSTANCE", context.instance)
        .env(
            "SLUICE_MODE",
            match spec.mode {
                FunctionMode::Exec => "exec",
                FunctionMode::Stream => "stream",
            },
        )
        .env("SLUICE_ENCODING", "ndjson")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);

    let limits = ResourceLimits::from_spec(spec);
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe operations are allowed. It makes plain syscalls (prctl, getppid,
    // getrlimit, setrlimit) through nix's thin wrappers, which neither allocate nor lock,
    // reads only values copied into the closure, and builds errors with
    // `io::Error::from_raw_os_error`, which does not allocate.
    unsafe {
        command.pre_exec(move || limits.apply_in_child(parent));
    }
    Ok(command)
}

fn resolve_program(dir: &Path, program: &str) -> PathBuf {
    let path = Path::new(program);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let in_job_folder = dir.join(path);
    if program.contains('/') || in_job_folder.is_file() {
        in_job_folder
    } else {
        path.to_path_buf()
    }
}

/// Limits applied in the child, as plain numbers (the closure must not allocate).
#[derive(Debug, Clone, Copy)]
struct ResourceLimits {
    memory: Option<u64>,
    open_files: u64,
    cpu_seconds: Option<u64>,
}

impl ResourceLimits {
    fn from_spec(spec: &FunctionSpec) -> Self {
        Self {
            memory: spec.memory,
            open_files: spec.open_files,
            // RLIMIT_CPU counts whole seconds; round up so a limit is never tighter.
            cpu_seconds: spec
                .cpu_time
                .map(|cpu| (cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0)).max(1)),
        }
    }

    /// Runs in the forked child; see the SAFETY note in [`build_command`].
    fn apply_in_child(&self, parent: Pid) -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The platform may have died between fork and prctl; then nobody would kill us.
        if nix::unistd::getppid() != parent {
            return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
        }
        if let Some(memory) = self.memory {
            lower_limit(Resource::RLIMIT_AS, memory, memory)?;
        }
        lower_limit(Resource::RLIMIT_NOFILE, self.open_files, self.open_files)?;
        if let Some(seconds) = self.cpu_seconds {
            // SIGXCPU at the soft limit, SIGKILL a second later.
            lower_limit(Resource::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
        }
        lower_limit(Resource::RLIMIT_CORE, 0, 0)?;
        Ok(())
    }
}

/// Sets a limit, never above the current hard limit (raising it needs privileges).
fn lower_limit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let (_, current_hard) = getrlimit(resource)?;
    let hard = hard.min(current_hard);
    setrlimit(resource, soft.min(hard), hard)?;
    Ok(())
}

/// A running function process, its group and its stderr log.
#[derive(Debug)]
pub(crate) struct FunctionProcess {
    child: Child,
    /// Process group id (the leader's pid).
    group: Pid,
    stderr: StderrLog,
    spawned_at: Instant,
    reaped: bool,
}

/// The pipes to a process's stdin and stdout.
#[derive(Debug)]
pub(crate) struct ProcessPipes {
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
}

impl FunctionProcess {
    /// Starts the function for `context` in its sandbox.
    pub(crate) fn spawn(
        context: &InstanceContext<'_>,
    ) -> Result<(FunctionProcess, ProcessPipes), InvokeError> {
        let spawn_error = |source: io::Error| InvokeError::Spawn {
            command: context.spec.command.join(" "),
            source,
        };
        let mut command = build_command(context)?;
        let spawned_at = Instant::now();
        let mut child = command.spawn().map_err(spawn_error)?;
        let (Some(pid), Some(stdin), Some(stdout), Some(stderr)) = (
            child.id(),
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take(),
        ) else {
            return Err(spawn_error(io::Error::other(
                "spawned process is missing its pid or a pipe",
            )));
        };
        let group = Pid::from_raw(pid as i32);
        let stderr = StderrLog::start(stderr, context.job, context.instance);
        let process = FunctionProcess {
            child,
            group,
            stderr,
            spawned_at,
            reaped: false,
        };
        Ok((process, ProcessPipes { stdin, stdout }))
    }

    /// The leader's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.group.as_raw() as u32
    }

    pub(crate) fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// A handle that signals the process group while the process itself is borrowed.
    pub(crate) fn group(&self) -> ProcessGroup {
        ProcessGroup(self.group)
    }

    /// SIGKILL to the whole group: the function and anything it started.
    pub(crate) fn kill_group(&self) {
        self.group().kill();
    }

    /// Waits for the leader to exit. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.reaped = true;
        Ok(status)
    }

    /// Whether the leader has exited (it is reaped if so). Does not wait.
    pub(crate) fn has_exited(&mut self) -> bool {
        if !self.reaped && matches!(self.child.try_wait(), Ok(Some(_))) {
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
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
        }
    }
}

/// A function's process group, for signalling it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessGroup(Pid);

impl ProcessGroup {
    /// Sends `signal` to every process in the group. A group that is already gone is fine.
    pub(crate) fn signal(self, signal: Signal) {
        // After the leader is reaped its pid stays reserved as long as any member of the
        // group lives, so this cannot reach an unrelated group while stragglers remain.
        if let Err(errno) = killpg(self.0, signal)
            && errno != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pgid = self.0.as_raw(), %errno, ?signal, "failed to signal function process group");
        }
    }

    /// SIGKILL to the whole group.
    pub(crate) fn kill(self) {
        self.signal(Signal::SIGKILL);
    }
}

/// The task that reads a process's stderr, and what it kept. The task ends when stderr
/// closes, which happens at the latest when the process group is killed.
#[derive(Debug)]
struct StderrLog {
    tail: Arc<Mutex<String>>,
    task: Option<JoinHandle<()>>,
}

impl StderrLog {
    fn start(stderr: ChildStderr, job: &str, instance: &str) -> Self {
        let tail = Arc::new(Mutex::new(String::new()));
        let task = tokio::spawn(log_stderr(
            stderr,
            job.to_owned(),
            instance.to_owned(),
            Arc::clone(&tail),
        ));
        Self {
            tail,
            task: Some(task),
        }
    }

    /// Waits up to `bound` for stderr to close, then returns its tail.
    async fn finish(&mut self, bound: Duration) -> String {
        if let Some(task) = self.task.as_mut()
            && tokio::time::timeout(bound, task).await.is_ok()
        {
            self.task = None;
        }
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .trim_end()
            .to_owned()
    }
}

/// Logs each stderr line (capped at [`MAX_STDERR_LINE`]) and keeps the tail.
async fn log_stderr(stderr: ChildStderr, job: String, instance: String, tail: Arc<Mutex<String>>) {
    let mut reader = BufReader::with_capacity(MAX_STDERR_LINE, stderr);
    let mut line = Vec::with_capacity(256);
    let mut truncated = false;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::warn!(job, instance, %error, "failed to read function stderr");
                break;
            }
        };
        if chunk.is_empty() {
            if !line.is_empty() {
                emit_stderr_line(&job, &instance, &line, truncated, &tail);
            }
            break;
        }
        let newline = memchr::memchr(b'\n', chunk);
        let take = newline.unwrap_or(chunk.len());
        let room = MAX_STDERR_LINE - line.len();
        line.extend_from_slice(&chunk[..take.min(room)]);
        truncated |= take > room;
        reader.consume(take + usize::from(newline.is_some()));
        if newline.is_some() {
            emit_stderr_line(&job, &instance, &line, truncated, &tail);
            line.clear();
            truncated = false;
        }
    }
}

fn emit_stderr_line(job: &str, instance: &str, line: &[u8], truncated: bool, tail: &Mutex<String>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text = String::from_utf8_lossy(line).into_owned();
    if truncated {
        text.push_str(" [truncated]");
    }
    tracing::info!(target: "sluice::function", job, instance, "{text}");
    let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    tail.push_str(&text);
    tail.push('\n');
    if tail.len() > STDERR_TAIL_BYTES {
        let mut cut = tail.len() - STDERR_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        // Prefer starting at a whole line when one begins inside the kept part.
        if let Some(newline) = tail[cut..].find('\n')
            && cut + newline + 1 < tail.len()
        {
            cut += newline + 1;
        }
        tail.drain(..cut);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_against_the_job_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("transform.py"), "").unwrap();
        assert_eq!(
            resolve_program(dir.path(), "./bin/run"),
            dir.path().join("./bin/run")
        );
        assert_eq!(
            resolve_program(dir.path(), "transform.py"),
            dir.path().join("transform.py")
        );
        assert_eq!(
            resolve_program(dir.path(), "python3"),
            PathBuf::from("python3")
        );
        assert_eq!(
            resolve_program(dir.path(), "/bin/sh"),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let tail = Mutex::new(String::new());
        for n in 0..1000 {
            emit_stderr_line("job", "job-1", format!("line {n}").as_bytes(), false, &tail);
        }
        let tail = tail.into_inner().unwrap();
        assert!(tail.len() <= STDERR_TAIL_BYTES);
        assert!(
            tail.starts_with("line "),
            "starts at a whole line: {tail:.20}"
        );
        assert!(tail.ends_with("line 999\n"));
    }
}
