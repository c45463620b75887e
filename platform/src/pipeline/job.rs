//! A job as one thing to open, run and stop: the entry point of `sluice run`, of
//! `sluice dlq replay` and of anything that starts and stops jobs at run time.
//!
//! ```text
//! let job = Job::open(&spec, runtime, options).await?;  // recovery, stores, committer, source
//! let stopper = job.stopper();                           // for whoever stops it later
//! let stats = job.run(shutdown).await?;                  // until shutdown, stop or the source ends
//! // elsewhere:
//! stopper.stop().await;                                  // stop intake, drain, commit; then run returns
//! ```
//!
//! Invariant: a job's source is connected only after recovery finished every range an
//! earlier run left unfinished, and after the committer read the committed ranges, so no
//! event is consumed that the output already holds without being recognised.

use sluice_connectors::{Source, SourceError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{JobError, JobRuntime, JobStats, run_pipeline};
use crate::commit::{Committer, RecoveryError, recover};
use crate::deadletter::dead_letter_location;
use crate::output::store::{OutputLocation, open_store};
use crate::spec::JobSpec;
use crate::status::JobState;
use crate::trigger::{ConnectOptions, connect_source, range_log};

/// Why a job could not be opened; nothing was consumed.
#[derive(Debug, thiserror::Error)]
pub enum JobOpenError {
    #[error("recovering unfinished output: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("connecting the trigger: {0}")]
    Connect(#[from] SourceError),
    #[error("opening the output: {0}")]
    Output(#[from] JobError),
}

/// One job, ready to run: its output and dead-letter locations, its committer and its
/// source. See the module docs.
pub struct Job {
    spec: JobSpec,
    runtime: JobRuntime,
    location: OutputLocation,
    dead_location: OutputLocation,
    committer: Committer,
    source: Box<dyn Source>,
    /// Cancelled by [`JobStopper::stop`].
    stop: CancellationToken,
    /// Set to true when [`Job::run`] returns (or is dropped).
    finished: watch::Sender<bool>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.spec.name)
            .field("output", &self.location.url)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// Opens the job its trigger defines: recovers unfinished output, reads the committed
    /// ranges, then connects the trigger. On failure the job's status says why.
    pub async fn open(
        spec: &JobSpec,
        runtime: JobRuntime,
        options: ConnectOptions,
    ) -> Result<Job, JobOpenError> {
        let runtime = runtime.masking(spec);
        let opened = async {
            let (location, dead_location) = open_locations(spec)?;
            let log = range_log(spec).map_err(RecoveryError::Store)?;
            if let Some(log) = log.as_deref() {
                let recovered =
                    recover(spec, log, location.clone(), dead_location.clone()).await?;
                if !recovered.redone.is_empty() {
                    info!(job = %spec.name, ranges = ?recovered.redone, "finished ranges an earlier run left unfinished");
                }
            }
            let committer =
                Committer::load(location.clone(), dead_location.clone(), log.as_deref())
                    .await
                    .map_err(JobError::from)?;
            let source = connect_source(spec, options).await?;
            Ok::<_, JobOpenError>(Job {
                spec: spec.clone(),
                runtime: runtime.clone(),
                location,
                dead_location,
                committer,
                source,
                stop: CancellationToken::new(),
                finished: watch::Sender::new(false),
            })
        }
        .await;
        if let Err(error) = &opened {
            runtime
                .status
                .set_state(JobState::Failed, Some(error.to_string()));
        }
        opened
    }

    /// Opens the job over `source` instead of its trigger (dead-letter replay, tests):
    /// the output and the committer as [`Job::open`] has them, no recovery.
    pub async fn over(
        spec: &JobSpec,
        source: Box<dyn Source>,
        runtime: JobRuntime,
    ) -> Result<Job, JobOpenError> {
        let runtime = runtime.masking(spec);
        let opened = open_output(spec).await;
        let (location, dead_location, committer) = match opened {
            Ok(parts) => parts,
            Err(error) => {
                runtime
                    .status
                    .set_state(JobState::Failed, Some(error.to_string()));
                return Err(error.into());
            }
        };
        Ok(Job {
            spec: spec.clone(),
            runtime,
            location,
            dead_location,
            committer,
            source,
            stop: CancellationToken::new(),
            finished: watch::Sender::new(false),
        })
    }

    /// The job from parts already opened: recovery's redo of one unfinished range (a
    /// redo committer and a source over exactly that range), and tests over doubles.
    pub(crate) fn from_parts(
        spec: &JobSpec,
        location: OutputLocation,
        dead_location: OutputLocation,
        committer: Committer,
        source: Box<dyn Source>,
    ) -> Job {
        Job {
            spec: spec.clone(),
            runtime: JobRuntime::for_job(spec),
            location,
            dead_location,
            committer,
            source,
            stop: CancellationToken::new(),
            finished: watch::Sender::new(false),
        }
    }

    /// Runs until `shutdown` is cancelled or [`JobStopper::stop`] is called — then stops
    /// intake, finishes the batches in flight, commits and returns — or until a finite
    /// source is exhausted.
    pub async fn run(self, shutdown: CancellationToken) -> Result<JobStats, JobError> {
        let Job {
            spec,
            runtime,
            location,
            dead_location,
            committer,
            source,
            stop,
            finished,
        } = self;
        // Either token stops the run: the caller's `shutdown`, or a stopper's `stop`.
        let forward = async {
            shutdown.cancelled().await;
            stop.cancel();
            std::future::pending::<std::convert::Infallible>().await
        };
        let run = run_pipeline(
            &spec,
            location,
            dead_location,
            source,
            stop.clone(),
            committer,
            runtime,
        );
        let result = tokio::select! {
            result = run => result,
            never = forward => match never {},
        };
        finished.send_replace(true);
        result
    }

    /// A handle that stops this job from elsewhere while [`Job::run`] runs.
    pub fn stopper(&self) -> JobStopper {
        JobStopper {
            stop: self.stop.clone(),
            finished: self.finished.subscribe(),
        }
    }
}

/// Stops a running job gracefully; cheap to clone.
#[derive(Debug, Clone)]
pub struct JobStopper {
    stop: CancellationToken,
    finished: watch::Receiver<bool>,
}

impl JobStopper {
    /// Stops intake, lets the job finish the batches in flight and commit, and returns
    /// once [`Job::run`] has returned (its result goes to whoever awaits `run`).
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut finished = self.finished.clone();
        // An error means the run was dropped: it has ended too.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// True once [`Job::run`] has returned.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }
}

/// The output and dead-letter locations.
pub(super) fn open_locations(spec: &JobSpec) -> Result<(OutputLocation, OutputLocation), JobError> {
    let location = open_store(&spec.output.url, &spec.output.options)?;
    let dead_location = dead_letter_location(spec, &location)?;
    Ok((location, dead_location))
}

/// The output and dead-letter locations and the committer over them.
async fn open_output(
    spec: &JobSpec,
) -> Result<(OutputLocation, OutputLocation, Committer), JobError> {
    let (location, dead_location) = open_locations(spec)?;
    let log = range_log(spec)?;
    let committer =
        Committer::load(location.clone(), dead_location.clone(), log.as_deref()).await?;
    Ok((location, dead_location, committer))
}
