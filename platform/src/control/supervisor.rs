//! The supervisor: makes the jobs this process runs match the registry.
//!
//! For each job, [`Supervisor::reconcile`] reads the registry and then, holding that job's
//! lock, drains the running version if it is not the one wanted (cancel → the pipeline
//! stops intake, finishes its in-flight batches, flushes and commits) and starts the
//! wanted one from the committed positions. Deploy, rollback, pause, resume and delete are
//! all "change the registry, then reconcile". A version that fails is retried with backoff
//! while the registry still wants it; its failure and reason are written to the registry.
//!
//! Running a version goes through one function, [`run_version`], the only place that
//! knows the pipeline's entry point. The pipeline's future is not `Send`, so versions are
//! not spawned as tasks: [`Supervisor::run_jobs`] polls them all (as `sluice run` polls
//! its jobs) and must be awaited by the process' main future; the pipeline's own work
//! still runs on the runtime's worker threads. Other pipelines (a dead-letter replay) run
//! there too, through [`Supervisor::run_local`].
//!
//! A paused job has no source to measure its backlog, so a task reads it from the trigger
//! every few seconds ([`crate::trigger::backlog_at_rest`]) until the job is reconciled
//! again: the lag stays visible on the API and the status page.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::bundle::{BundleError, BundleStore};
use super::registry::{DesiredState, Registry, RegistryError};
use crate::pipeline::{Job, JobError, JobOpenError, JobRuntime, JobStats};
use crate::pool::node::NodeCapacity;
use crate::spec::{JobSpec, SpecErrors, load_job};
use crate::status::{JobState, StatusBoard};
use crate::trigger::ConnectOptions;

/// Why a version could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Open(#[from] JobOpenError),
    #[error(transparent)]
    Run(#[from] JobError),
    #[error("version {version} is not in the registry")]
    UnknownVersion { version: i64 },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("job.toml of the stored version no longer validates: {0}")]
    Spec(SpecErrors),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A bug in Sluice.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs one version of a job until `stop` is cancelled (then drains: finishes the
/// in-flight batches, commits) or its source ends. The single adapter between the control
/// plane and the pipeline.
pub async fn run_version(
    spec: &JobSpec,
    stop: CancellationToken,
    runtime: JobRuntime,
) -> Result<JobStats, RunError> {
    let options = ConnectOptions {
        stop_when_idle: false,
    };
    let job = Job::open(spec, runtime, options).await?;
    Ok(job.run(stop).await?)
}

/// What the supervisor shares with its jobs.
#[derive(Debug)]
pub struct SupervisorContext {
    pub registry: Registry,
    pub store: BundleStore,
    pub board: Arc<StatusBoard>,
    pub node: Arc<NodeCapacity>,
    /// Where batch attempts are recorded (written in batches, off the hot path).
    pub invocations: super::invocations::InvocationRecorder,
    /// The functions' stderr lines, per job (this node's, in memory).
    pub logs: Arc<super::logs::FunctionLogs>,
}

/// The version a job runs in this process.
#[derive(Debug)]
struct RunningVersion {
    version: i64,
    stop: CancellationToken,
    /// Cancelled once the version has stopped (drained and committed, or failed for good).
    finished: CancellationToken,
}

/// Work for [`Supervisor::run_jobs`] to poll: a version of a job, or another pipeline (a
/// dead-letter replay) whose future, like a version's, is not `Send`.
enum Launch {
    Version {
        job: String,
        version: i64,
        stop: CancellationToken,
        finished: CancellationToken,
    },
    Task(LocalTask),
}

/// Makes the future of a [`Supervisor::run_local`] task, on the thread that polls it.
pub type LocalTask =
    Box<dyn FnOnce(Arc<SupervisorContext>) -> LocalBoxFuture<'static, ()> + Send + 'static>;

#[derive(Debug, Default)]
struct Slot {
    running: Option<RunningVersion>,
    /// While the job is paused: stops the task that keeps its backlog current.
    paused_watch: Option<CancellationToken>,
}

/// Runs every registered job in its state.
#[derive(Debug)]
pub struct Supervisor {
    context: Arc<SupervisorContext>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    tasks: TaskTracker,
    launches: mpsc::UnboundedSender<Launch>,
    launched: Mutex<Option<mpsc::UnboundedReceiver<Launch>>>,
    /// Cancelled by [`Supervisor::shutdown`]: nothing starts any more.
    closed: CancellationToken,
    /// The dead-letter replays of this process.
    replays: super::deadletters::Replays,
}

/// The slowest retry of a failing version.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Supervisor {
    pub fn new(context: SupervisorContext) -> Arc<Self> {
        let (launches, launched) = mpsc::unbounded_channel();
        Arc::new(Self {
            context: Arc::new(context),
            slots: Mutex::default(),
            tasks: TaskTracker::new(),
            launches,
            launched: Mutex::new(Some(launched)),
            closed: CancellationToken::new(),
            replays: super::deadletters::Replays::default(),
        })
    }

    /// Runs the versions the supervisor starts, until [`Supervisor::shutdown`] has drained
    /// them. Await it beside the rest of the process (it runs once; later calls return at
    /// once).
    pub async fn run_jobs(&self) {
        let Some(mut launched) = self
            .launched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let mut running: FuturesUnordered<LocalBoxFuture<'static, ()>> = FuturesUnordered::new();
        loop {
            tokio::select! {
                launch = launched.recv() => {
                    let Some(launch) = launch else { break };
                    let context = Arc::clone(&self.context);
                    running.push(match launch {
                        Launch::Version { job, version, stop, finished } => Box::pin(async move {
                            supervise(context, job, version, stop).await;
                            finished.cancel();
                        }),
                        Launch::Task(task) => task(context),
                    });
                }
                Some(()) = running.next(), if !running.is_empty() => {}
                () = self.closed.cancelled() => break,
            }
        }
        while running.next().await.is_some() {}
    }

    pub fn context(&self) -> &SupervisorContext {
        &self.context
    }

    /// The dead-letter replays of this process.
    pub fn replays(&self) -> &super::deadletters::Replays {
        &self.replays
    }

    /// Runs `task` beside the jobs, polled by [`Supervisor::run_jobs`]; it is handed a
    /// token cancelled at shutdown, after the jobs drained. False once shutting down.
    pub fn run_local(
        &self,
        task: impl FnOnce(Arc<SupervisorContext>, CancellationToken) -> LocalBoxFuture<'static, ()>
        + Send
        + 'static,
    ) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let stop = self.closed.child_token();
        let task: LocalTask = Box::new(move |context| task(context, stop));
        self.launches.send(Launch::Task(task)).is_ok()
    }

    /// Starts every job the registry lists, each at its version and in its state.
    pub async fn start_all(self: &Arc<Self>) -> Result<(), RegistryError> {
        for job in self.context.registry.jobs().await? {
            self.reconcile(&job.name).await?;
        }
        Ok(())
    }

    /// Makes `job` in this process match the registry (see the module doc). Runs in a
    /// task of its own, so a caller that goes away cannot leave it half done.
    pub async fn reconcile(self: &Arc<Self>, job: &str) -> Result<(), RegistryError> {
        let this = Arc::clone(self);
        let job = job.to_owned();
        let task = self
            .tasks
            .spawn(async move { this.reconcile_now(&job).await });
        match task.await {
            Ok(result) => result,
            Err(error) => {
                warn!(%error, "reconciling a job panicked");
                Ok(())
            }
        }
    }

    async fn reconcile_now(self: &Arc<Self>, job: &str) -> Result<(), RegistryError> {
        let slot = self.slot(job);
        let mut slot = slot.lock().await;
        if let Some(watch) = slot.paused_watch.take() {
            watch.cancel();
        }
        let record = self.context.registry.job(job).await?;
        let wanted = record
            .as_ref()
            .filter(|record| record.state != DesiredState::Paused)
            .map(|record| record.version);
        if let Some(running) = &slot.running
            && Some(running.version) == wanted
            && !running.finished.is_cancelled()
        {
            return Ok(());
        }
        if let Some(running) = slot.running.take() {
            info!(job, version = running.version, "draining");
            drain(running).await;
        }
        let status = self.context.board.job(job);
        match (record, wanted) {
            (None, _) => {
                self.context.board.remove(job);
                crate::function::set_stderr_tap(job, None);
                self.context.logs.remove(job);
                info!(job, "deleted");
            }
            (Some(record), None) => {
                status.set_state(JobState::Stopped, Some("paused".to_owned()));
                info!(job, "paused");
                let watch = self.closed.child_token();
                slot.paused_watch = Some(watch.clone());
                let context = Arc::clone(&self.context);
                let job = job.to_owned();
                self.tasks
                    .spawn(async move { watch_paused(context, job, record.version, watch).await });
            }
            (Some(_), Some(version)) if !self.closed.is_cancelled() => {
                self.keep_function_uid(job).await?;
                slot.running = Some(self.start(job, version));
            }
            (Some(_), Some(_)) => {}
        }
        Ok(())
    }

    /// Runs `job`'s functions as the uid the registry records for it (recorded now at
    /// its first start), so the id stays the job's across restarts and nodes.
    async fn keep_function_uid(&self, job: &str) -> Result<(), RegistryError> {
        let Some(candidates) = crate::function::function_uid_candidates(job) else {
            return Ok(());
        };
        let uid = self.context.registry.function_uid(job, candidates).await?;
        if let Some(uid) = uid.and_then(|uid| u32::try_from(uid).ok())
            && !crate::function::reserve_function_uid(job, uid)
        {
            warn!(
                job,
                uid,
                "the uid recorded for the job is outside SLUICE_FUNCTION_UIDS or held by another job here; its functions run as another id"
            );
        }
        Ok(())
    }

    fn start(&self, job: &str, version: i64) -> RunningVersion {
        let running = RunningVersion {
            version,
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
        };
        let launch = Launch::Version {
            job: job.to_owned(),
            version,
            stop: running.stop.clone(),
            finished: running.finished.clone(),
        };
        if self.launches.send(launch).is_err() {
            // No one runs versions any more (shutting down): nothing to wait for.
            running.finished.cancel();
        }
        running
    }

    /// Drains every job (SIGTERM): all at once, each finishing its in-flight batches and
    /// committing. The registry is not changed, so a restart brings every job back.
    pub async fn shutdown(&self) {
        let slots: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let drains = slots.into_iter().map(|slot| async move {
            let mut slot = slot.lock().await;
            if let Some(running) = slot.running.take() {
                drain(running).await;
            }
        });
        futures::future::join_all(drains).await;
        self.context.logs.close();
        self.closed.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The version `job` runs in this process now, if any.
    pub fn running_version(&self, job: &str) -> Option<i64> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job)
            .cloned()?;
        let slot = slot.try_lock().ok()?;
        slot.running
            .as_ref()
            .filter(|running| !running.finished.is_cancelled())
            .map(|running| running.version)
    }

    fn slot(&self, job: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        Arc::clone(
            self.slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(job.to_owned())
                .or_default(),
        )
    }
}

async fn drain(running: RunningVersion) {
    running.stop.cancel();
    running.finished.cancelled().await;
}

/// Runs `version` of `job` until `stop`, restarting it with backoff after a failure and
/// keeping the registry's state and reason current.
async fn supervise(
    context: Arc<SupervisorContext>,
    job: String,
    version: i64,
    stop: CancellationToken,
) {
    let job = job.as_str();
    let status = context.board.job(job);
    let mut backoff = Duration::from_secs(1);
    loop {
        status.set_state(JobState::Starting, None);
        let attempt = attempt(Arc::clone(&context), job.to_owned(), version, stop.clone());
        let report = report_when_running(Arc::clone(&context), job.to_owned(), version);
        let result = tokio::select! {
            result = attempt => result,
            never = report => match never {},
        };
        match result {
            Ok(stats) => {
                info!(
                    job,
                    version,
                    records = stats.records_in,
                    rows = stats.rows_out,
                    "version stopped"
                );
                if !stop.is_cancelled() {
                    status.set_state(JobState::Stopped, Some("the source ended".to_owned()));
                }
                return;
            }
            Err(error) if stop.is_cancelled() => {
                warn!(job, version, %error, "version failed while draining");
                return;
            }
            Err(error) => {
                let reason = error.to_string();
                warn!(job, version, %reason, retry_in = ?backoff, "version failed");
                status.set_state(JobState::Failed, Some(reason.clone()));
                if let Err(error) = context
                    .registry
                    .report_run(job, version, Some(&reason))
                    .await
                {
                    warn!(job, %error, "could not record the failure in the registry");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One start of a version, until it stops or fails.
async fn attempt(
    context: Arc<SupervisorContext>,
    job: String,
    version: i64,
    stop: CancellationToken,
) -> Result<JobStats, RunError> {
    let spec = spec_of(&context, &job, version).await?;
    info!(job, version, dir = %spec.dir.display(), "starting version");
    let log = context.logs.job(&job);
    crate::function::set_stderr_tap(&job, Some(Arc::clone(&log) as _));
    let observer = super::invocations::VersionObserver {
        job: job.clone(),
        version,
        recorder: context.invocations.clone(),
        log,
    };
    let runtime = JobRuntime {
        node: Arc::clone(&context.node),
        status: context.board.job(&job),
        observer: Some(Arc::new(observer)),
    };
    run_version(&spec, stop, runtime).await
}

/// Waits until the pipeline reports `running`, then clears a failure recorded by an
/// earlier attempt; never returns.
async fn report_when_running(
    context: Arc<SupervisorContext>,
    job: String,
    version: i64,
) -> std::convert::Infallible {
    let job = job.as_str();
    let status = context.board.job(job);
    let mut reported = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let running = status
            .snapshot()
            .is_some_and(|snapshot| snapshot.state == JobState::Running);
        if running && !reported {
            match context.registry.report_run(job, version, None).await {
                Ok(()) => reported = true,
                Err(error) => warn!(job, %error, "could not record the job as running"),
            }
        }
    }
}

/// How often the backlog of a paused job is read.
const PAUSED_BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Keeps the backlog of a paused job current on the status board (its source, which
/// would report it, is closed) until `stop`: the lag grows visibly while it is paused.
async fn watch_paused(
    context: Arc<SupervisorContext>,
    job: String,
    version: i64,
    stop: CancellationToken,
) {
    let spec = tokio::select! {
        spec = spec_of(&context, &job, version) => spec,
        () = stop.cancelled() => return,
    };
    let spec = match spec {
        Ok(spec) => spec,
        Err(error) => {
            warn!(job, %error, "cannot read the backlog of the paused job");
            return;
        }
    };
    let status = context.board.job(&job);
    loop {
        let backlog = tokio::select! {
            backlog = crate::trigger::backlog_at_rest(&spec) => backlog,
            () = stop.cancelled() => return,
        };
        match backlog {
            None => {
                status.update(|status| status.backlog = None);
                return;
            }
            Some(Ok(backlog)) => status.update(|status| status.backlog = Some(backlog)),
            Some(Err(error)) => {
                let error = spec.secrets.redact(&error.to_string()).into_owned();
                warn!(job, %error, "cannot read the backlog of the paused job");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PAUSED_BACKLOG_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The validated spec of a stored version, unpacked from its bundle if need be.
pub(super) async fn spec_of(
    context: &SupervisorContext,
    job: &str,
    version: i64,
) -> Result<JobSpec, RunError> {
    let record = context
        .registry
        .version(job, version)
        .await?
        .ok_or(RunError::UnknownVersion { version })?;
    let store = context.store.clone();
    let dir: PathBuf = tokio::task::spawn_blocking(move || store.ensure_unpacked(&record.sha256))
        .await
        .map_err(|error| RunError::Internal(format!("unpacking the bundle: {error}")))??;
    load_job(&dir).map_err(RunError::Spec)
}
