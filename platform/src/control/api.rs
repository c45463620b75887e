//! The HTTP API of `sluice serve`, JSON under `/v1`:
//!
//! | method and path                                   | role  | does |
//! |---------------------------------------------------|-------|------|
//! | `PUT /v1/jobs/{name}`                             | admin | deploys the `.tar.gz` body as the job's next version (same content: same version) |
//! | `GET /v1/jobs`                                    | read  | every job: version, state, reason, status |
//! | `GET /v1/jobs/{name}`                             | read  | one job, with its job.toml |
//! | `POST /v1/jobs/{name}/pause`                      | admin | drains and holds |
//! | `POST /v1/jobs/{name}/resume`                     | admin | runs again from the committed positions |
//! | `POST /v1/jobs/{name}/rollback`                   | admin | body `{"version": N}` or empty (the version before the current one) |
//! | `DELETE /v1/jobs/{name}`                          | admin | drains, stops, removes from the list |
//! | `GET /v1/jobs/{name}/versions`                    | read  | the job's versions |
//! | `GET /v1/jobs/{name}/invocations?limit=`          | read  | the newest batch attempts |
//! | `GET /v1/jobs/{name}/logs?follow=`                | read  | the function's stderr lines ([`function_logs`]) |
//! | `GET /v1/jobs/{name}/dead-letters`                | read  | pending dead letters per object, partition or queue ([`super::deadletters`]) |
//! | `GET /v1/jobs/{name}/dead-letters/letters?limit=` | read  | the pending dead letters themselves |
//! | `POST /v1/jobs/{name}/dead-letters/replay`        | admin | runs them through the job's current version again |
//! | `GET /healthz`                                    | none  | the process answers |
//! | `GET /readyz`                                     | read  | the registry answers |
//! | `GET /metrics`                                    | read  | Prometheus text, every job |
//! | `GET /v1/openapi.json`                            | read  | the OpenAPI document, generated from these handlers ([`super::openapi`]) |
//! | `GET /`, `GET /jobs/{name}`                       | read  | the status page (see [`super::page`]) |
//!
//! Every error has one shape, `{"error": {"code", "message", "details": [...]}}`, and
//! never a stack trace. Bodies over the limit get 413. Tokens: see [`super::auth`].
//!
//! A new route is a handler with its `#[utoipa::path(...)]` and one
//! `.routes(routes!(handler))` line in [`api_routes`]: served and documented at once.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::warn;
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Role, Tokens};
use super::bundle::BundleError;
use super::openapi::{ApiDoc, ErrorBody, ErrorDetail};
use super::registry::{JobRecord, RegistryError};
use super::supervisor::Supervisor;
use super::{deadletters, jobs};
use crate::status::http::prometheus_text;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub supervisor: Arc<Supervisor>,
    pub tokens: Arc<Tokens>,
}

/// The API's routes; `body_limit` caps a request body (413 above it).
pub fn router(state: ApiState, body_limit: usize) -> Router {
    let router: Router<ApiState> = api_routes().into();
    router
        .merge(super::page::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Every API route with its documentation (see the module doc).
pub(crate) fn api_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::show_job, jobs::deploy, jobs::delete_job))
        .routes(routes!(jobs::pause))
        .routes(routes!(jobs::resume))
        .routes(routes!(jobs::rollback))
        .routes(routes!(jobs::versions))
        .routes(routes!(jobs::invocations))
        .routes(routes!(function_logs::logs))
        .routes(routes!(deadletters::list))
        .routes(routes!(deadletters::letters))
        .routes(routes!(deadletters::replay_status, deadletters::replay))
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
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(super) fn not_found(job: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {job:?}"),
        )
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
            },
        };
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

pub(super) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(error) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            error.to_string(),
        )
        .into_response(),
    }
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

pub(super) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Admin => Ok(()),
        Role::Read => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this call needs an admin token; the token given is read-only",
        )),
    }
}

/// A request body, or 413 above the limit.
pub(super) fn body_within_limit(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than the server accepts",
            )
        } else {
            ApiError::bad_request(format!("reading the body: {rejection}"))
        }
    })
}

/// The job's registry record, or 404.
pub(super) async fn existing_job(state: &ApiState, name: &str) -> Result<JobRecord, ApiError> {
    state
        .supervisor
        .context()
        .registry
        .job(name)
        .await?
        .ok_or_else(|| ApiError::not_found(name))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {}", uri.path()),
    )
}

/// 405 in the one error shape (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", security(("bearer" = [])), responses(
    (status = 200, description = "the document", body = Object),
    (status = 401, description = "no valid token", body = ErrorBody),
))]
async fn openapi(_caller: Caller) -> Response {
    json_response(StatusCode::OK, super::openapi::document())
}

/// The process answers (no token needed).
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "`ok`", body = String, content_type = "text/plain"),
))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Debug, Serialize, ToSchema)]
struct Ready {
    ready: bool,
}

/// The registry answers.
#[utoipa::path(get, path = "/readyz", security(("bearer" = [])), responses(
    (status = 200, description = "ready", body = Ready),
    (status = 401, description = "no valid token", body = ErrorBody),
    (status = 503, description = "the registry is unavailable", body = ErrorBody),
))]
async fn readyz(State(state): State<ApiState>, _caller: Caller) -> Result<Response, ApiError> {
    state.supervisor.context().registry.schema_version().await?;
    Ok(json_response(StatusCode::OK, &Ready { ready: true }))
}

/// Prometheus metrics of every job.
#[utoipa::path(get, path = "/metrics", security(("bearer" = [])), responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
    (status = 401, description = "no valid token", body = ErrorBody),
))]
async fn metrics(State(state): State<ApiState>, _caller: Caller) -> Response {
    let context = state.supervisor.context();
    let mut text = prometheus_text(&context.board.snapshot());
    text.push_str(&format!(
        "# HELP sluice_invocation_records_dropped_total Invocation records dropped because their writer was behind.\n\
         # TYPE sluice_invocation_records_dropped_total counter\n\
         sluice_invocation_records_dropped_total {}\n",
        context.invocations.dropped()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `?limit=` from 1 to 10000, `default` when absent.
pub(super) fn limit(uri: &Uri, default: i64) -> Result<i64, ApiError> {
    match query_value(uri, "limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=10_000).contains(limit))
            .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 10000")),
    }
}

mod function_logs;

fn query_value<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}
