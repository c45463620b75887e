//! The function runtime: running a job's function on a batch, in a sandboxed subprocess,
//! over the function protocol (`docs/function-protocol.md`).
//!
//! ```text
//! let batch = encode_batch(&events, spec.input);
//! let mut runner = FunctionRunner::new(job, dir, &spec);
//! loop { let output = runner.invoke(&batch).await?; /* rows → Parquet, errors → DLQ */ }
//! runner.shutdown().await;
//! ```
//!
//! - [`encode`]: events → NDJSON stdin ([`EncodedBatch`]); [`encode_arrow`]: that batch
//!   as an Arrow IPC stream, with `encoding = "arrow"`.
//! - [`protocol`]: stdout → rows and per-record errors ([`FunctionOutput`]), and the
//!   error type of an invocation ([`InvokeError`]); [`protocol_arrow`]: the same for an
//!   Arrow IPC answer.
//! - `sandbox`: spawning with a cleared environment, a process group, rlimits; `cgroup`:
//!   per-instance cgroups (process and memory limits, kill-all); `isolation`: what the
//!   platform can use here (cgroups, namespaces, a user per job, dropping capabilities)
//!   and the child-side setup; `identity`: the uid and gid of a job; `bundle`: the job's
//!   files staged read-only for that uid; `namespaces`: the function's mount namespace;
//!   `syscalls`: its seccomp filter;
//!   `stderr`: stderr logs within a budget. `docs/security.md` is the security model.
//! - `exec`: one process per batch. `stream`: a warm instance reused across batches.
//! - `zygote`: with `function.preload`, instances are forked from a parent Python
//!   interpreter that imported the modules once, with the same sandbox; it makes their
//!   PID and mount namespaces in a user namespace of its own (`user_namespace`).
//!
//! Invariants: [`FunctionRunner::invoke`] runs exactly one attempt (retries and bisection
//! are the caller's); when it returns an error, every process of the failed attempt is
//! dead. A runner holds at most one warm stream instance; dropping the runner (or an
//! `invoke` future) kills it. A misbehaving function (crash, hang, fork bomb, memory
//! blow-up, output or stderr flood) costs only its own invocation: other runners, and the
//! platform, carry on.
//!
//! The platform should call [`harden_platform_process`] once at start.

mod bundle;
mod cgroup;
pub mod encode;
pub mod encode_arrow;
mod environment;
mod exec;
mod identity;
mod infer_arrow;
mod init_program;
mod invoke_error;
mod isolation;
mod json_check;
mod namespaces;
mod pid_namespace;
pub mod protocol;
pub mod protocol_arrow;
mod sandbox;
mod spawn_command;
mod stderr;
mod stream;
mod syscalls;
mod user_namespace;
mod zygote;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use encode::{EncodedBatch, encode_batch};
pub use identity::{function_uid_candidates, reserve_function_uid};
pub use isolation::harden_platform_process;
pub use protocol::{FunctionOutput, InvokeError, MemoryEnforcement, RecordError};
pub use stderr::{StderrTap, set_stderr_tap};

use crate::spec::secret::Secrets;
use crate::spec::{Encoding, FunctionMode, FunctionSpec};
use cgroup::JobCgroup;
use sandbox::{InstanceContext, JobSandbox};
use stream::StreamInstance;
use zygote::Zygote;

/// The protections this host cannot give a function with `spec` (a user of its own,
/// namespaces, no capabilities, cgroups), each named with what it stops; empty when it
/// gets them all. Detects the host's isolation on first use (see [`FunctionRunner::new`]).
pub fn missing_protections(spec: &FunctionSpec) -> Vec<String> {
    isolation::isolation().missing(spec)
}

/// How long a stopping instance gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs one job's function, batch by batch.
#[derive(Debug)]
pub struct FunctionRunner {
    job: String,
    dir: PathBuf,
    spec: FunctionSpec,
    /// Instances (exec processes or stream instances) started so far, shared by the
    /// runner's [siblings](Self::sibling) so instance ids stay unique within the job.
    started: Arc<AtomicU64>,
    warm: Option<StreamInstance>,
    /// How long [`shutdown`](Self::shutdown) waits between SIGTERM and SIGKILL.
    stop_grace: Duration,
    /// Whether instances get cgroups when the host allows them.
    use_cgroups: bool,
    /// Whether instances get a user of their own (and so a bundle and namespaces) when
    /// the host allows it ([`Self::with_job_user`]).
    use_job_user: bool,
    /// The job's cgroup directories, made with the first instance of any sibling.
    job_cgroup: Arc<std::sync::Mutex<Option<Arc<JobCgroup>>>>,
    /// The job's preload parent when `function.preload` is set (shared by the job's
    /// runners; its process starts with the first instance).
    zygote: Option<Arc<Zygote>>,
    /// The job's secrets, masked in the function's stderr (see [`Self::with_secrets`]).
    secrets: Secrets,
    /// The job's user and staged bundle, made with the first instance of any sibling.
    sandbox: Arc<tokio::sync::Mutex<Option<Arc<JobSandbox>>>>,
    /// The instance the last [`invoke`](Self::invoke) ran on, for invocation records.
    last_instance: Option<String>,
}

/// A batch in the function's wire encoding (`function.encoding`): made by [`wire_batch`]
/// before an instance is leased, so the conversion's CPU work does not hold one.
#[derive(Debug)]
pub struct WireBatch<'a>(Cow<'a, EncodedBatch>);

/// `batch` (NDJSON, as [`encode_batch`] makes it) as the function described by `spec`
/// reads it: as it is, or as an Arrow IPC stream with `encoding = "arrow"` (CPU work of
/// the order of decoding the output). A record that does not fit the input schema is an
/// [`InvokeError::Input`]: the same batch would fail the same way every time.
pub fn wire_batch<'a>(
    spec: &FunctionSpec,
    batch: &'a EncodedBatch,
) -> Result<WireBatch<'a>, InvokeError> {
    Ok(WireBatch(match spec.encoding {
        Encoding::Ndjson => Cow::Borrowed(batch),
        Encoding::Arrow => Cow::Owned(encode_arrow::ndjson_to_arrow(
            batch,
            spec.input_schema.as_ref(),
            spec.input,
        )?),
    }))
}

impl FunctionRunner {
    /// A runner for `job`, whose function runs in folder `dir` as `spec` says. Nothing is
    /// started until the first [`invoke`](Self::invoke).
    ///
    /// The first runner of a platform process detects, once, which isolation the host
    /// allows (cgroups, network namespaces, dropping capabilities; 10 to 20 ms of blocking
    /// work) and logs at warn level what is missing, unless [`harden_platform_process`]
    /// did so at start.
    pub fn new(job: &str, dir: &Path, spec: &FunctionSpec) -> Self {
        isolation::isolation();
        Self {
            job: job.to_owned(),
            dir: dir.to_path_buf(),
            spec: spec.clone(),
            started: Arc::new(AtomicU64::new(0)),
            warm: None,
            stop_grace: STOP_GRACE,
            use_cgroups: true,
            use_job_user: true,
            job_cgroup: Arc::default(),
            zygote: (!spec.preload.is_empty()).then(|| Zygote::for_job(job, dir, spec)),
            secrets: Secrets::default(),
            sandbox: Arc::default(),
            last_instance: None,
        }
    }

    /// The runner masking `secrets` (the job's, [`crate::spec::JobSpec::secrets`]) in the
    /// function's stderr: in the lines logged and in the tail error messages quote.
    pub fn with_secrets(mut self, secrets: &Secrets) -> Self {
        self.secrets = secrets.clone();
        self
    }

    /// The runner with (`true`, the default) or without a user of its own for the job's
    /// instances. Without it, instances also get no staged bundle, no mount namespace and
    /// no PID namespace, and a preloaded job's instances share its preload process's: they
    /// run as the platform's user in the job folder itself, with the other protections
    /// (cgroup, network namespace, rlimits, no capabilities, the system call filter).
    /// `function.isolation = "strict"` still refuses a host that cannot give a protection;
    /// what is turned off here is the caller's choice. For measuring what that isolation
    /// costs (`bench/sandbox_cold_start.rs`), and for programs embedding the runtime that
    /// run trusted code where the job's runtime is not usable by another user.
    pub fn with_job_user(mut self, job_user: bool) -> Self {
        self.use_job_user = job_user;
        self
    }

    /// Another runner of the same job (one per pool instance): same function, shared
    /// instance numbering and job cgroup, no warm instance yet.
    pub fn sibling(&self) -> Self {
        Self {
            job: self.job.clone(),
            dir: self.dir.clone(),
            spec: self.spec.clone(),
            started: Arc::clone(&self.started),
            warm: None,
            stop_grace: self.stop_grace,
            use_cgroups: self.use_cgroups,
            use_job_user: self.use_job_user,
            job_cgroup: Arc::clone(&self.job_cgroup),
            zygote: self.zygote.clone(),
            secrets: self.secrets.clone(),
            sandbox: Arc::clone(&self.sandbox),
            last_instance: None,
        }
    }

    /// Stream mode: starts the warm instance now if there is none, so the next batch does
    /// not wait for the process to spawn (instances kept warm by `min_instances`). Its
    /// init time is still measured, on its first batch. Exec mode has nothing to warm.
    pub async fn warm_up(&mut self) -> Result<(), InvokeError> {
        if self.spec.mode == FunctionMode::Stream && self.warm.is_none() {
            let instance = self.start_instance().await?;
            self.warm = Some(instance);
        }
        Ok(())
    }

    /// The process id of the warm stream instance, if one is running.
    pub fn warm_pid(&self) -> Option<u32> {
        self.warm.as_ref().map(StreamInstance::pid)
    }

    /// The job's cgroup handle when instances get cgroups; made on first use.
    fn job_cgroup(&mut self) -> Result<Option<Arc<JobCgroup>>, InvokeError> {
        if !self.use_cgroups {
            return Ok(None);
        }
        let Some(hierarchy) = isolation::isolation().cgroups.as_ref() else {
            return Ok(None);
        };
        let mut shared = self
            .job_cgroup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shared.is_none() {
            let handle =
                JobCgroup::for_job(hierarchy, &self.job).map_err(|error| InvokeError::Sandbox {
                    reason: format!("cannot create the job's cgroup: {error}"),
                })?;
            *shared = Some(handle);
        }
        Ok(shared.clone())
    }

    /// The job's user and bundle when the platform can give its function a user of its
    /// own; made on first use. With `function.isolation = "strict"`, an error when any
    /// protection is missing on this host.
    async fn job_sandbox(&self) -> Result<Option<Arc<JobSandbox>>, InvokeError> {
        let isolation = isolation::isolation();
        isolation.refuse_unless_allowed(&self.spec)?;
        let (Ok(range), true) = (&isolation.function_ids, self.use_job_user) else {
            return Ok(None);
        };
        let mut shared = self.sandbox.lock().await;
        if shared.is_none() {
            let identity =
                identity::assign(*range, &self.job).ok_or_else(|| InvokeError::Sandbox {
                    reason: format!(
                        "every id of {} is taken by another job",
                        identity::RANGE_VARIABLE
                    ),
                })?;
            let (job, dir) = (self.job.clone(), self.dir.clone());
            // Copying the job folder is blocking file I/O: off the async runtime.
            let bundle =
                tokio::task::spawn_blocking(move || bundle::Bundle::stage(&job, &dir, identity))
                    .await
                    .map_err(|error| InvokeError::Sandbox {
                        reason: format!("staging the job folder did not finish: {error}"),
                    })?
                    .map_err(|error| match error {
                        bundle::StageError::TooLarge { .. } => InvokeError::Refused {
                            reason: error.to_string(),
                        },
                        bundle::StageError::Io { .. } => InvokeError::Sandbox {
                            reason: error.to_string(),
                        },
                    })?;
            *shared = Some(Arc::new(JobSandbox { identity, bundle }));
        }
        Ok(shared.clone())
    }

    /// Runs the function once on `batch`: a fresh process in exec mode; in stream mode the
    /// warm instance, or a new one (a cold start) when there is none. After a failure the
    /// next call starts a new instance.
    ///
    /// `batch` is NDJSON as [`encode_batch`] makes it; with `encoding = "arrow"` it is
    /// turned into an Arrow IPC stream first, and a record that does not fit the input
    /// schema fails the invocation ([`InvokeError::Input`]) before any process starts.
    pub async fn invoke(&mut self, batch: &EncodedBatch) -> Result<FunctionOutput, InvokeError> {
        let wire = wire_batch(&self.spec, batch)?;
        self.invoke_wire(&wire).await
    }

    /// [`invoke`](Self::invoke) on a batch already in the function's wire encoding.
    pub async fn invoke_wire(
        &mut self,
        batch: &WireBatch<'_>,
    ) -> Result<FunctionOutput, InvokeError> {
        let batch = batch.0.as_ref();
        self.last_instance = None;
        match self.spec.mode {
            FunctionMode::Exec => {
                let job_cgroup = self.job_cgroup()?;
                let sandbox = self.job_sandbox().await?;
                let instance = self.next_instance_id();
                self.last_instance = Some(instance.clone());
                let context = InstanceContext {
                    job: &self.job,
                    instance: &instance,
                    dir: &self.dir,
                    spec: &self.spec,
                    job_cgroup: job_cgroup.as_ref(),
                    zygote: self.zygote.as_deref(),
                    secrets: &self.secrets,
                    sandbox: sandbox.as_deref(),
                };
                exec::run_batch(&context, batch).await
            }
            FunctionMode::Stream => self.invoke_stream(batch).await,
        }
    }

    async fn invoke_stream(&mut self, batch: &EncodedBatch) -> Result<FunctionOutput, InvokeError> {
        let mut warm = self.warm.take();
        if let Some(dead) = warm.take_if(|instance| !instance.is_running()) {
            tracing::warn!(
                job = self.job,
                instance = dead.id(),
                "warm function instance exited while idle; starting a new one"
            );
            dead.kill().await;
        }
        let mut instance = match warm {
            Some(warm) => warm,
            None => self.start_instance().await?,
        };
        self.last_instance = Some(instance.id().to_owned());
        let result = instance.invoke(batch, &self.spec).await;
        match &result {
            Ok(output) if instance.batches() == 1 => {
                let init_ms = output.init_time.map(|init| init.as_millis() as u64);
                tracing::info!(
                    job = self.job,
                    instance = instance.id(),
                    pid = instance.pid(),
                    init_ms,
                    first_batch_ms = output.duration.as_millis() as u64,
                    "function instance cold start"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(
                job = self.job,
                instance = instance.id(),
                batches = instance.batches(),
                // May quote the function's output or stderr.
                error = %self.secrets.redact(&error.to_string()),
                "function instance failed and was killed"
            ),
        }
        if instance.is_usable() {
            self.warm = Some(instance);
        }
        result
    }

    async fn start_instance(&mut self) -> Result<StreamInstance, InvokeError> {
        let job_cgroup = self.job_cgroup()?;
        let sandbox = self.job_sandbox().await?;
        let instance_id = self.next_instance_id();
        let context = InstanceContext {
            job: &self.job,
            instance: &instance_id,
            dir: &self.dir,
            spec: &self.spec,
            job_cgroup: job_cgroup.as_ref(),
            zygote: self.zygote.as_deref(),
            secrets: &self.secrets,
            sandbox: sandbox.as_deref(),
        };
        let instance = StreamInstance::start(&context).await?;
        tracing::debug!(
            job = self.job,
            instance = instance.id(),
            pid = instance.pid(),
            "started function instance"
        );
        Ok(instance)
    }

    fn next_instance_id(&mut self) -> String {
        let number = self.started.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{number}", self.job)
    }

    /// The instance the last [`invoke`](Self::invoke) ran on (none if it failed before
    /// one started).
    pub fn last_instance(&self) -> Option<&str> {
        self.last_instance.as_deref()
    }

    /// The warm stream instance's id, if one is running.
    pub fn warm_instance(&self) -> Option<&str> {
        self.warm.as_ref().map(StreamInstance::id)
    }

    /// Stops the warm instance, if any: stdin closed, SIGTERM to its process group, and
    /// SIGKILL to all its processes if it has not exited within 5 s. The runner stays
    /// usable.
    pub async fn shutdown(&mut self) {
        if let Some(instance) = self.warm.take() {
            tracing::debug!(
                job = self.job,
                instance = instance.id(),
                "stopping function instance"
            );
            instance.stop(self.stop_grace).await;
        }
    }

    /// Changes the grace period of [`shutdown`](Self::shutdown) between SIGTERM and
    /// SIGKILL (5 s unless set).
    pub fn set_stop_grace(&mut self, grace: Duration) {
        self.stop_grace = grace;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
#[cfg(test)]
pub(crate) use tests::SHARED_TEST_DIR;
