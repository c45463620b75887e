//! The job routes of the API: list, show, deploy, pause, resume, rollback, delete,
//! versions and invocations (see the table in [`super::api`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::api::{
    ApiError, ApiState, body_within_limit, existing_job, json_response, limit, require_admin,
};
use super::auth::Caller;
use super::bundle::{Bundle, BundleError};
use super::openapi::{AdminJobRefusals, ErrorBody, JobName, JobRefusals, Limit, ListRefusals};
use super::registry::{DesiredState, JobRecord, VersionRecord};

/// A job as the API shows it: the registry's record, the version running here and the
/// pipeline's live status.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    /// The version that runs (or would run, when paused).
    pub version: i64,
    pub state: DesiredState,
    /// Why the job failed.
    pub reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The uid (and gid) the job's functions run as on this node, once it has started.
    pub function_uid: Option<i64>,
    /// The version this process runs now (none while paused, draining or starting).
    pub running_version: Option<i64>,
    /// The pipeline's live status: state, instances, backlog (the lag, kept current
    /// while paused too), counters.
    #[schema(value_type = Option<Object>)]
    pub status: Option<crate::status::JobStatus>,
    /// Only on `GET /v1/jobs/{name}`: the bundle's sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Only on `GET /v1/jobs/{name}`: the running version's job.toml.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_toml: Option<String>,
}

fn job_view(state: &ApiState, record: &JobRecord) -> JobView {
    let status = state
        .supervisor
        .context()
        .board
        .snapshot()
        .into_iter()
        .find(|status| status.job == record.name);
    JobView {
        name: record.name.clone(),
        version: record.version,
        state: record.state,
        reason: record.reason.clone(),
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
        function_uid: record.function_uid,
        running_version: state.supervisor.running_version(&record.name),
        status,
        sha256: None,
        job_toml: None,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct JobList {
    jobs: Vec<JobView>,
}

/// Every job with its version, state and status.
#[utoipa::path(get, path = "/v1/jobs", security(("bearer" = [])), responses(
    (status = 200, description = "the jobs", body = JobList),
    ListRefusals,
))]
pub(super) async fn list_jobs(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let jobs = state.supervisor.context().registry.jobs().await?;
    let jobs = jobs.iter().map(|job| job_view(&state, job)).collect();
    Ok(json_response(StatusCode::OK, &JobList { jobs }))
}

/// One job, with its job.toml.
#[utoipa::path(get, path = "/v1/jobs/{name}", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "the job", body = JobView),
    JobRefusals,
))]
pub(super) async fn show_job(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let context = state.supervisor.context();
    let record = existing_job(&state, &name).await?;
    let mut view = job_view(&state, &record);
    if let Some(version) = context.registry.version(&name, record.version).await? {
        let file = context.store.version_dir(&version.sha256).join("job.toml");
        view.job_toml = std::fs::read_to_string(file).ok();
        view.sha256 = Some(version.sha256);
    }
    Ok(json_response(StatusCode::OK, &view))
}

/// The bundle of a deploy: the job folder as a `.tar.gz` (job.toml and the function's files).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BundleBody(pub Vec<u8>);

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeployedView {
    name: String,
    version: i64,
    sha256: String,
    /// A new version number was made (false: this content was deployed before).
    new_version: bool,
    /// The job's current version changed (false: it already ran this content).
    changed: bool,
}

/// Deploys a bundle as the job's next version.
#[utoipa::path(put, path = "/v1/jobs/{name}", params(JobName), security(("bearer" = [])),
    request_body(content = BundleBody, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "a new version, now running (or paused)", body = DeployedView),
        (status = 200, description = "the same content was deployed before: its version", body = DeployedView),
        (status = 400, description = "the bundle is invalid: every problem in `details`", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the token is read-only", body = ErrorBody),
        (status = 413, description = "the body is over the limit", body = ErrorBody),
        (status = 500, description = "the bundle could not be stored", body = ErrorBody),
        (status = 503, description = "the registry is unavailable", body = ErrorBody),
))]
pub(super) async fn deploy(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let body = body_within_limit(body)?;
    let context = state.supervisor.context();
    let store = context.store.clone();
    let requested = name.clone();
    // Decompressing and writing up to the size limit: off the async runtime.
    let bundle = tokio::task::spawn_blocking(move || -> Result<Bundle, BundleError> {
        let bundle = Bundle::read(&body, store.limits)?;
        bundle.validate(&store.version_dir(&bundle.sha256), Some(&requested))?;
        store.store(&bundle)?;
        Ok(bundle)
    })
    .await
    .map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("checking the bundle: {error}"),
        )
    })??;
    let deployed = context
        .registry
        .deploy(&name, &bundle.sha256, &caller.name)
        .await?;
    info!(job = %name, version = deployed.version, by = %caller.name, changed = deployed.changed, "deployed");
    state.supervisor.reconcile(&name).await?;
    let status = if deployed.new_version {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = DeployedView {
        name,
        version: deployed.version,
        sha256: bundle.sha256,
        new_version: deployed.new_version,
        changed: deployed.changed,
    };
    Ok(json_response(status, &view))
}

/// Drains the job and holds it: no function process, the source position kept, the
/// backlog still measured.
#[utoipa::path(post, path = "/v1/jobs/{name}/pause", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "paused", body = JobView),
    AdminJobRefusals,
))]
pub(super) async fn pause(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_state(state, caller, name, DesiredState::Paused).await
}

/// Runs the job again from its committed positions.
#[utoipa::path(post, path = "/v1/jobs/{name}/resume", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "running", body = JobView),
    AdminJobRefusals,
))]
pub(super) async fn resume(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_state(state, caller, name, DesiredState::Running).await
}

async fn set_state(
    state: ApiState,
    caller: Caller,
    name: String,
    wanted: DesiredState,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    existing_job(&state, &name).await?;
    let registry = &state.supervisor.context().registry;
    registry.set_state(&name, wanted, None).await?;
    changed(&state, &caller, &name, wanted.as_str()).await
}

/// Reconciles a changed job and answers with its view.
async fn changed(
    state: &ApiState,
    caller: &Caller,
    name: &str,
    action: &str,
) -> Result<Response, ApiError> {
    info!(job = %name, action, by = %caller.name, "job changed");
    state.supervisor.reconcile(name).await?;
    let record = existing_job(state, name).await?;
    Ok(json_response(StatusCode::OK, &job_view(state, &record)))
}

/// The body of a rollback; empty means the version before the current one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RollbackRequest {
    pub version: i64,
}

/// Runs an earlier version, drained and started as a deploy is.
#[utoipa::path(post, path = "/v1/jobs/{name}/rollback", params(JobName), security(("bearer" = [])),
    request_body(content = Option<RollbackRequest>, content_type = "application/json",
        description = "`{\"version\": N}`, or empty for the version before the current one"),
    responses(
        (status = 200, description = "running the earlier version", body = JobView),
        (status = 400, description = "no such version, or the body is not `{\"version\": N}`", body = ErrorBody),
        AdminJobRefusals,
        (status = 413, description = "the body is over the limit", body = ErrorBody),
))]
pub(super) async fn rollback(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let record = existing_job(&state, &name).await?;
    let body = body_within_limit(body)?;
    let target = rollback_target(&state, &record, &body).await?;
    let registry = &state.supervisor.context().registry;
    registry
        .set_version(&name, target)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("job {name:?} has no version {target}")))?;
    changed(&state, &caller, &name, "rollback").await
}

/// The version a rollback goes to: the body's `version`, or the newest one before the
/// current.
async fn rollback_target(
    state: &ApiState,
    record: &JobRecord,
    body: &[u8],
) -> Result<i64, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let request: RollbackRequest = serde_json::from_slice(body).map_err(|error| {
            ApiError::bad_request(format!("body must be {{\"version\": N}}: {error}"))
        })?;
        return Ok(request.version);
    }
    let versions = state
        .supervisor
        .context()
        .registry
        .versions(&record.name)
        .await?;
    versions
        .iter()
        .rev()
        .map(|version| version.version)
        .find(|version| *version < record.version)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "job {:?} has no version before {}",
                record.name, record.version
            ))
        })
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Deleted {
    deleted: String,
}

/// Drains and stops the job and removes it from the list; its outputs and dead letters
/// stay where they are.
#[utoipa::path(delete, path = "/v1/jobs/{name}", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "deleted", body = Deleted),
    AdminJobRefusals,
))]
pub(super) async fn delete_job(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    if !state.supervisor.context().registry.delete(&name).await? {
        return Err(ApiError::not_found(&name));
    }
    info!(job = %name, by = %caller.name, "deleting");
    state.supervisor.reconcile(&name).await?;
    Ok(json_response(StatusCode::OK, &Deleted { deleted: name }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Versions {
    /// The job's current version.
    current: i64,
    versions: Vec<VersionRecord>,
}

/// The job's versions, oldest first.
#[utoipa::path(get, path = "/v1/jobs/{name}/versions", params(JobName), security(("bearer" = [])), responses(
    (status = 200, description = "the versions", body = Versions),
    JobRefusals,
))]
pub(super) async fn versions(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = existing_job(&state, &name).await?;
    let versions = state.supervisor.context().registry.versions(&name).await?;
    let view = Versions {
        current: record.version,
        versions,
    };
    Ok(json_response(StatusCode::OK, &view))
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Invocations {
    /// Newest first.
    #[schema(value_type = Vec<Object>)]
    invocations: Vec<super::registry::InvocationRecord>,
}

/// The job's newest batch attempts.
#[utoipa::path(get, path = "/v1/jobs/{name}/invocations", params(JobName, Limit), security(("bearer" = [])), responses(
    (status = 200, description = "the batch attempts", body = Invocations),
    (status = 400, description = "`limit` is not an integer from 1 to 10000", body = ErrorBody),
    JobRefusals,
))]
pub(super) async fn invocations(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limit = limit(&uri, 100)?;
    existing_job(&state, &name).await?;
    let registry = &state.supervisor.context().registry;
    let invocations = registry.invocations(&name, limit).await?;
    Ok(json_response(StatusCode::OK, &Invocations { invocations }))
}
