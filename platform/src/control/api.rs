//! The HTTP API of `sluice serve`, JSON under `/v1`:
//!
//! | method and path                         | role  | does |
//! |-----------------------------------------|-------|------|
//! | `PUT /v1/jobs/{name}`                   | admin | deploys the `.tar.gz` body as the job's next version (same content: same version) |
//! | `GET /v1/jobs`                          | read  | every job: version, state, reason, status |
//! | `GET /v1/jobs/{name}`                   | read  | one job, with its job.toml |
//! | `POST /v1/jobs/{name}/pause`            | admin | drains and holds |
//! | `POST /v1/jobs/{name}/resume`           | admin | runs again from the committed positions |
//! | `POST /v1/jobs/{name}/rollback`         | admin | body `{"version": N}` or empty (the version before the current one) |
//! | `DELETE /v1/jobs/{name}`                | admin | drains, stops, removes from the list |
//! | `GET /v1/jobs/{name}/versions`          | read  | the job's versions |
//! | `GET /v1/jobs/{name}/invocations?limit=`| read  | the newest batch attempts |
//! | `GET /healthz`                          | none  | the process answers |
//! | `GET /readyz`                           | read  | the registry answers |
//! | `GET /metrics`                          | read  | Prometheus text, every job |
//! | `GET /v1/openapi.json`                  | read  | this table as an OpenAPI document ([`super::openapi`]) |
//! | `GET /`, `GET /jobs/{name}`             | read  | the status page (see [`super::page`]) |
//!
//! Every error has one shape, `{"error": {"code", "message", "details": [...]}}`, and
//! never a stack trace. Bodies over the limit get 413. Tokens: see [`super::auth`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::auth::{Caller, Role, Tokens};
use super::bundle::{Bundle, BundleError};
use super::registry::{JobRecord, RegistryError};
use super::supervisor::Supervisor;
use crate::status::http::prometheus_text;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub supervisor: Arc<Supervisor>,
    pub tokens: Arc<Tokens>,
}

/// The API's routes; `body_limit` caps a request body (413 above it).
pub fn router(state: ApiState, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/jobs", get(list_jobs))
        .route(
            "/v1/jobs/{name}",
            get(show_job).put(deploy).delete(delete_job),
        )
        .route("/v1/jobs/{name}/versions", get(versions))
        .route("/v1/jobs/{name}/invocations", get(invocations))
        .route("/v1/jobs/{name}/{action}", post(act))
        .route("/v1/openapi.json", get(openapi))
        .merge(super::page::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The one error shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    fn not_found(job: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {job:?}"),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {"code": self.code, "message": self.message, "details": self.details}
        });
        json_response(self.status, &body)
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        warn!(%error, "registry request failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry_unavailable",
            error.to_string(),
        )
    }
}

impl From<BundleError> for ApiError {
    fn from(error: BundleError) -> Self {
        if error.is_user_error() {
            let details = error.details();
            Self {
                details,
                ..Self::new(StatusCode::BAD_REQUEST, "invalid_bundle", error.to_string())
            }
        } else {
            warn!(%error, "storing a bundle failed");
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            )
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        state.tokens.authenticate(header).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid token is required: Authorization: Bearer <token>",
            )
        })
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Read => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this call needs an admin token; the token given is read-only",
        )),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {}", uri.path()),
    )
}

async fn openapi(_caller: Caller) -> Response {
    json_response(StatusCode::OK, &super::openapi::document())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>, _caller: Caller) -> Result<Response, ApiError> {
    state.supervisor.context().registry.schema_version().await?;
    Ok(json_response(StatusCode::OK, &json!({"ready": true})))
}

async fn metrics(State(state): State<ApiState>, _caller: Caller) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus_text(&state.supervisor.context().board.snapshot()),
    )
        .into_response()
}

/// A job as the API shows it: the registry's record, the version running here and the
/// pipeline's live status.
fn job_view(state: &ApiState, record: &JobRecord) -> Value {
    let status = state
        .supervisor
        .context()
        .board
        .snapshot()
        .into_iter()
        .find(|status| status.job == record.name);
    json!({
        "name": record.name,
        "version": record.version,
        "state": record.state,
        "reason": record.reason,
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
        "function_uid": record.function_uid,
        "running_version": state.supervisor.running_version(&record.name),
        "status": status,
    })
}

async fn list_jobs(State(state): State<ApiState>, _caller: Caller) -> Result<Response, ApiError> {
    let jobs = state.supervisor.context().registry.jobs().await?;
    let views: Vec<Value> = jobs.iter().map(|job| job_view(&state, job)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "jobs": views })))
}

async fn show_job(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let context = state.supervisor.context();
    let record = context
        .registry
        .job(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(&name))?;
    let mut view = job_view(&state, &record);
    if let Some(version) = context.registry.version(&name, record.version).await? {
        let file = context.store.version_dir(&version.sha256).join("job.toml");
        view["sha256"] = json!(version.sha256);
        view["job_toml"] = json!(std::fs::read_to_string(file).ok());
    }
    Ok(json_response(StatusCode::OK, &view))
}

async fn deploy(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the bundle is larger than the server accepts",
            )
        } else {
            ApiError::bad_request(format!("reading the body: {rejection}"))
        }
    })?;
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
    Ok(json_response(
        status,
        &json!({
            "name": name,
            "version": deployed.version,
            "sha256": bundle.sha256,
            "new_version": deployed.new_version,
            "changed": deployed.changed,
        }),
    ))
}

async fn act(
    State(state): State<ApiState>,
    caller: Caller,
    Path((name, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let registry = &state.supervisor.context().registry;
    let record = match action.as_str() {
        "pause" | "resume" | "rollback" => {
            require_admin(&caller)?;
            registry
                .job(&name)
                .await?
                .ok_or_else(|| ApiError::not_found(&name))?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {action:?}; allowed: pause, resume, rollback"),
            ));
        }
    };
    match action.as_str() {
        "pause" => {
            registry
                .set_state(&name, super::registry::DesiredState::Paused, None)
                .await?;
        }
        "resume" => {
            registry
                .set_state(&name, super::registry::DesiredState::Running, None)
                .await?;
        }
        _ => {
            let body = body.map_err(|rejection| ApiError::bad_request(rejection.to_string()))?;
            let target = rollback_target(&state, &record, &body).await?;
            registry.set_version(&name, target).await?.ok_or_else(|| {
                ApiError::bad_request(format!("job {name:?} has no version {target}"))
            })?;
        }
    }
    info!(job = %name, action = %action, by = %caller.name, "job changed");
    state.supervisor.reconcile(&name).await?;
    let record = registry
        .job(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(&name))?;
    Ok(json_response(StatusCode::OK, &job_view(&state, &record)))
}

/// The version a rollback goes to: the body's `version`, or the newest one before the
/// current.
async fn rollback_target(
    state: &ApiState,
    record: &JobRecord,
    body: &[u8],
) -> Result<i64, ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| ApiError::bad_request(format!("body is not JSON: {error}")))?;
        return value
            .get("version")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::bad_request("body must be {\"version\": N}"));
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

async fn delete_job(
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
    Ok(json_response(StatusCode::OK, &json!({"deleted": name})))
}

async fn versions(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let registry = &state.supervisor.context().registry;
    let record = registry
        .job(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(&name))?;
    let versions = registry.versions(&name).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"current": record.version, "versions": versions}),
    ))
}

async fn invocations(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limit = match query_value(&uri, "limit") {
        None => 100,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=10_000).contains(limit))
            .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 10000"))?,
    };
    let registry = &state.supervisor.context().registry;
    registry
        .job(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(&name))?;
    let records = registry.invocations(&name, limit).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "invocations": records }),
    ))
}

fn query_value<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}
