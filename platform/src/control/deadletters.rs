//! Dead letters over the API: list them (per object, partition or queue, with counts),
//! show them, and replay them through the job's current version — what
//! `sluice dlq list|show|replay` does with a job folder, for a registered job.
//!
//! A replay runs **beside the job**, not instead of it: the job keeps its state (a running
//! job keeps consuming, a paused one stays paused) and the replay is a second pipeline over
//! a [`ReplaySource`] (through [`Job::over`], as the command line runs it) with the
//! version's spec, sharing the node's instance slots. That is safe because the two never
//! touch the same positions: the job reads its trigger, the replay reads the dead-letter
//! destination, and each commits only its own ranges; letters the job dead-letters while
//! the replay runs are new letters, left for the next replay. Pausing the job first would
//! stop intake for as long as the replay takes, for no gain in correctness.
//!
//! One replay per job at a time (a second gets 409). A replay's progress lives in the
//! process that runs it ([`Replays`]); the letters' own state (pending or replayed) lives
//! in the dead-letter destination, so a replay cut short by a restart is finished by
//! replaying again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use futures::FutureExt as _;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};
use utoipa::ToSchema;

use super::api::{ApiError, ApiState, existing_job, json_response, limit, require_admin};
use super::auth::Caller;
use super::openapi::{ErrorBody, JobName, JobRefusals, Limit};
use super::supervisor::{RunError, spec_of};
use crate::deadletter::replay::{DeadLetterListing, ReplayError, ReplaySource, read_dead_letters};
use crate::pipeline::{Job, JobRuntime};
use crate::spec::JobSpec;
use crate::status::JobStatusHandle;

/// The pending dead letters of a job, counted per object, partition or queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterSummary {
    pub job: String,
    /// Where they are kept, for people (a URL without password, a topic, a queue).
    pub destination: String,
    /// What `objects` are: `objects`, `partitions` or `queues`.
    pub unit: String,
    /// Pending letters in all.
    pub total: u64,
    pub objects: Vec<LetterObjectSummary>,
    /// The latest replay this process ran for the job, if any.
    pub replay: Option<ReplayView>,
}

/// One dead-letter object, partition or queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LetterObjectSummary {
    pub name: String,
    pub letters: u64,
    /// The error of its first letter (at most 200 characters).
    pub first_error: Option<String>,
}

impl DeadLetterSummary {
    pub fn new(job: &str, listing: &DeadLetterListing, replay: Option<ReplayView>) -> Self {
        let objects = listing
            .objects
            .iter()
            .map(|object| LetterObjectSummary {
                name: object.name.clone(),
                letters: object.letters.len() as u64,
                first_error: object
                    .letters
                    .first()
                    .and_then(|(_, letter)| letter.get("error"))
                    .and_then(Value::as_str)
                    .map(|error| error.chars().take(200).collect()),
            })
            .collect();
        Self {
            job: job.to_owned(),
            destination: listing.destination.clone(),
            unit: listing.unit.to_owned(),
            total: listing.total() as u64,
            objects,
            replay,
        }
    }
}

/// Pending dead letters themselves.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetters {
    pub job: String,
    pub destination: String,
    pub letters: Vec<LetterView>,
}

/// One dead letter and where it is kept.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LetterView {
    /// The object, `<topic>/<partition>` or queue.
    pub object: String,
    /// Its line there (1-based; offset + 1 in a partition).
    pub line: u64,
    /// The letter as written: payload, key, headers, timestamp, error, attempts.
    #[schema(value_type = Object)]
    pub letter: Value,
}

/// A replay of a job's dead letters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayView {
    /// `running`, `done` or `failed`.
    pub state: String,
    /// The job version whose function the letters run through.
    pub version: i64,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// Letters taken for the replay.
    pub total: u64,
    /// Letters acknowledged so far: their output is durable, or they failed again and are
    /// in new dead letters.
    pub acknowledged: u64,
    /// Once finished: rows written.
    pub rows_out: Option<u64>,
    /// Once finished: letters that failed again (back in the dead letters).
    pub failed_again: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

#[derive(Debug)]
struct ReplayEntry {
    view: ReplayView,
    progress: Arc<AtomicU64>,
}

/// The replays of this process, by job.
#[derive(Debug, Clone, Default)]
pub struct Replays(Arc<Mutex<HashMap<String, ReplayEntry>>>);

impl Replays {
    /// The latest replay of `job`, with its progress now.
    pub fn get(&self, job: &str) -> Option<ReplayView> {
        let replays = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        replays.get(job).map(|entry| {
            let mut view = entry.view.clone();
            view.acknowledged = entry.progress.load(Ordering::Relaxed).min(view.total);
            view
        })
    }

    /// Marks a replay of `job` as running; refused while one runs.
    fn begin(&self, job: &str, version: i64) -> Result<(), ApiError> {
        let mut replays = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if replays
            .get(job)
            .is_some_and(|entry| entry.view.state == "running")
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replay_running",
                format!("the dead letters of job {job:?} are being replayed already"),
            ));
        }
        let view = ReplayView {
            state: "running".to_owned(),
            version,
            started_ms: now_ms(),
            finished_ms: None,
            total: 0,
            acknowledged: 0,
            rows_out: None,
            failed_again: None,
            error: None,
        };
        let entry = ReplayEntry {
            view,
            progress: Arc::default(),
        };
        replays.insert(job.to_owned(), entry);
        Ok(())
    }

    /// The letters taken for the running replay of `job` and its count of acknowledged ones.
    fn taken(&self, job: &str, total: u64, progress: Arc<AtomicU64>) {
        let mut replays = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = replays.get_mut(job) {
            entry.view.total = total;
            entry.progress = progress;
        }
    }

    fn update(&self, job: &str, change: impl FnOnce(&mut ReplayView)) {
        let mut replays = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = replays.get_mut(job) {
            change(&mut entry.view);
        }
    }

    fn finish(&self, job: &str, outcome: Result<(u64, u64), String>) {
        self.update(job, |view| {
            view.finished_ms = Some(now_ms());
            match outcome {
                Ok((rows_out, failed_again)) => {
                    view.state = "done".to_owned();
                    view.rows_out = Some(rows_out);
                    view.failed_again = Some(failed_again);
                }
                Err(error) => {
                    view.state = "failed".to_owned();
                    view.error = Some(error);
                }
            }
        });
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The spec of the job's current version.
async fn current_spec(state: &ApiState, name: &str) -> Result<(JobSpec, i64), ApiError> {
    let record = existing_job(state, name).await?;
    let spec = spec_of(state.supervisor.context(), name, record.version)
        .await
        .map_err(|error| match error {
            RunError::Registry(error) => ApiError::from(error),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the job's version {}: {other}", record.version),
            ),
        })?;
    Ok((spec, record.version))
}

/// Reading the dead-letter destination failed; the message has the job's secrets masked.
fn read_failed(spec: &JobSpec, error: &ReplayError) -> ApiError {
    let message = spec.secrets.redact(&error.to_string()).into_owned();
    warn!(job = %spec.name, %message, "reading dead letters failed");
    match error {
        ReplayError::Malformed { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "malformed_dead_letter",
            message,
        ),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "dead_letters_unavailable", message),
    }
}

/// The job's pending dead letters, counted per object, partition or queue, and its latest
/// replay. Changes nothing.
#[utoipa::path(get, path = "/v1/jobs/{name}/dead-letters", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "the pending dead letters", body = DeadLetterSummary),
    JobRefusals,
    (status = 500, description = "a dead letter Sluice did not write, or the job's stored version is unusable", body = ErrorBody),
    (status = 502, description = "the dead-letter destination cannot be read", body = ErrorBody),
))]
pub(super) async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (spec, _) = current_spec(&state, &name).await?;
    let listing = read_dead_letters(&spec, None)
        .await
        .map_err(|error| read_failed(&spec, &error))?;
    let replay = state.supervisor.replays().get(&name);
    let summary = DeadLetterSummary::new(&name, &listing, replay);
    Ok(json_response(StatusCode::OK, &summary))
}

/// The job's pending dead letters themselves, oldest first. Changes nothing.
#[utoipa::path(get, path = "/v1/jobs/{name}/dead-letters/letters", params(JobName, Limit), security(("bearer" = [])), responses(
    (status = 200, description = "the pending dead letters", body = DeadLetters),
    (status = 400, description = "`limit` is not an integer from 1 to 10000", body = ErrorBody),
    JobRefusals,
    (status = 500, description = "a dead letter Sluice did not write, or the job's stored version is unusable", body = ErrorBody),
    (status = 502, description = "the dead-letter destination cannot be read", body = ErrorBody),
))]
pub(super) async fn letters(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limit = limit(&uri, 100)? as usize;
    let (spec, _) = current_spec(&state, &name).await?;
    let listing = read_dead_letters(&spec, Some(limit))
        .await
        .map_err(|error| read_failed(&spec, &error))?;
    let letters = listing
        .objects
        .iter()
        .flat_map(|object| {
            object.letters.iter().map(|(line, letter)| LetterView {
                object: object.name.clone(),
                line: *line,
                letter: letter.clone(),
            })
        })
        .take(limit)
        .collect();
    let view = DeadLetters {
        job: name,
        destination: listing.destination,
        letters,
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// The latest replay of the job's dead letters in this process, with its progress.
#[utoipa::path(get, path = "/v1/jobs/{name}/dead-letters/replay", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "the latest replay", body = ReplayView),
    (status = 401, description = "no valid token", body = ErrorBody),
    (status = 404, description = "no such job, or no replay of it ran here", body = ErrorBody),
    (status = 503, description = "the registry is unavailable", body = ErrorBody),
))]
pub(super) async fn replay_status(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    existing_job(&state, &name).await?;
    let replay = state.supervisor.replays().get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no replay of job {name:?} ran on this server"),
        )
    })?;
    Ok(json_response(StatusCode::OK, &replay))
}

/// Runs the job's pending dead letters through its current version again, beside the
/// job (which keeps its state). Follow it on `GET /v1/jobs/{name}/dead-letters/replay`.
#[utoipa::path(post, path = "/v1/jobs/{name}/dead-letters/replay", params(JobName), security(("bearer" = [])), responses(
    (status = 202, description = "the replay started", body = ReplayView),
    (status = 200, description = "nothing to replay", body = ReplayView),
    (status = 401, description = "no valid token", body = ErrorBody),
    (status = 403, description = "the token is read-only", body = ErrorBody),
    (status = 404, description = "no such job", body = ErrorBody),
    (status = 409, description = "a replay of this job is running", body = ErrorBody),
    (status = 500, description = "a dead letter Sluice did not write, or the job's stored version is unusable", body = ErrorBody),
    (status = 502, description = "the dead-letter destination cannot be read", body = ErrorBody),
    (status = 503, description = "the registry is unavailable, or the server is shutting down", body = ErrorBody),
))]
pub(super) async fn replay(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let (spec, version) = current_spec(&state, &name).await?;
    let replays = state.supervisor.replays().clone();
    replays.begin(&name, version)?;
    let (source, total) = match ReplaySource::open(&spec).await {
        Ok(opened) => opened,
        Err(error) => {
            let error = read_failed(&spec, &error);
            replays.finish(&name, Err("the dead letters could not be read".to_owned()));
            return Err(error);
        }
    };
    replays.taken(&name, total, source.progress());
    if total == 0 {
        replays.finish(&name, Ok((0, 0)));
        return Ok(json_response(StatusCode::OK, &replays.get(&name)));
    }
    info!(job = %name, version, letters = total, by = %caller.name, "replaying dead letters");
    let task_replays = replays.clone();
    let job = name.clone();
    let started = state.supervisor.run_local(move |context, stop| {
        async move {
            let runtime = JobRuntime {
                node: Arc::clone(&context.node),
                status: JobStatusHandle::detached(&spec.name),
                observer: None,
            };
            let result = match Job::over(&spec, Box::new(source), runtime).await {
                Ok(job) => job.run(stop).await.map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let outcome = result
                .map(|stats| (stats.rows_out, stats.dead_letters))
                .map_err(|error| spec.secrets.redact(&error).into_owned());
            match &outcome {
                Ok((rows, again)) => {
                    info!(job, rows, failed_again = again, "dead letters replayed")
                }
                Err(error) => warn!(job, %error, "replaying dead letters failed"),
            }
            task_replays.finish(&job, outcome);
        }
        .boxed_local()
    });
    if !started {
        replays.finish(&name, Err("the server is shutting down".to_owned()));
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ));
    }
    Ok(json_response(StatusCode::ACCEPTED, &replays.get(&name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replay_per_job_at_a_time_with_its_progress() {
        let replays = Replays::default();
        replays.begin("clicks", 2).unwrap();
        let refused = replays.begin("clicks", 2).unwrap_err();
        assert_eq!(refused.status(), StatusCode::CONFLICT);
        replays.begin("orders", 1).unwrap();

        let progress = Arc::new(AtomicU64::new(0));
        replays.taken("clicks", 3, Arc::clone(&progress));
        progress.store(2, Ordering::Relaxed);
        let running = replays.get("clicks").unwrap();
        assert_eq!(
            (running.state.as_str(), running.total, running.acknowledged),
            ("running", 3, 2)
        );

        replays.finish("clicks", Ok((3, 0)));
        let done = replays.get("clicks").unwrap();
        assert_eq!(done.state, "done");
        assert_eq!((done.rows_out, done.failed_again), (Some(3), Some(0)));
        assert!(done.finished_ms.is_some());
        replays.begin("clicks", 3).unwrap();

        replays.finish("orders", Err("the store is gone".to_owned()));
        let failed = replays.get("orders").unwrap();
        assert_eq!(failed.state, "failed");
        assert_eq!(failed.error.as_deref(), Some("the store is gone"));
        assert!(replays.get("nothing").is_none());
    }
}
