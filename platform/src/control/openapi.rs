//! The OpenAPI 3.1 document of the API, served at `/v1/openapi.json`, generated from the
//! code: every handler carries its `#[utoipa::path]` (method, path, parameters, body and
//! every response it can give) and the bodies are the Rust types the handlers serialize.
//! [`super::api::api_routes`] registers each handler with axum and with the document in
//! one line, so a route cannot be served without being documented.
//!
//! Every error answer is [`ErrorBody`], `{"error": {"code", "message", "details": [...]}}`.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

/// The fixed parts of the document; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice control API", description = "Deploy and control the jobs of `sluice serve`."),
    modifiers(&BearerToken),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

/// The `bearer` security scheme every call but `/healthz` names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The one error shape of the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code` for scripts, a `message` for people and, for an
/// invalid bundle, every problem found in `details`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `not_found`, `unauthorized`, `forbidden`, `invalid_bundle`, `payload_too_large`.
    pub code: String,
    pub message: String,
    pub details: Vec<String>,
}

/// The job named in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobName {
    /// The job's name, as in its job.toml.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub name: String,
}

/// The refusals of a route that reads the job list: no valid token, the registry
/// unavailable. A route names its set in `responses(...)` beside its own answers.
#[derive(IntoResponses)]
pub enum ListRefusals {
    #[response(status = 401, description = "no valid token")]
    Unauthorized(ErrorBody),
    #[response(status = 503, description = "the registry is unavailable")]
    Unavailable(ErrorBody),
}

/// The refusals of a route that reads one job: [`ListRefusals`] and no such job.
#[derive(IntoResponses)]
pub enum JobRefusals {
    #[response(status = 401, description = "no valid token")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "no such job")]
    NotFound(ErrorBody),
    #[response(status = 503, description = "the registry is unavailable")]
    Unavailable(ErrorBody),
}

/// The refusals of a route that changes one job (admin only): [`JobRefusals`] and a
/// read-only token.
#[derive(IntoResponses)]
pub enum AdminJobRefusals {
    #[response(status = 401, description = "no valid token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "the token is read-only")]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "no such job")]
    NotFound(ErrorBody),
    #[response(status = 503, description = "the registry is unavailable")]
    Unavailable(ErrorBody),
}

/// `?limit=`: how many, newest first.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// From 1 to 10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

/// The document (built once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = super::api::api_routes().into_openapi();
        document.info.version = env!("CARGO_PKG_VERSION").to_owned();
        document
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document_json() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn every_route_documents_its_errors_in_the_one_shape() {
        let document = document_json();
        let paths = document["paths"].as_object().unwrap();
        let error = "#/components/schemas/ErrorBody";
        let mut operations = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                let responses = operation["responses"].as_object().unwrap();
                let secured = operation["security"].is_array();
                assert_eq!(secured, path != "/healthz", "{method} {path}");
                if secured {
                    let unauthorized = &responses["401"]["content"]["application/json"];
                    assert_eq!(unauthorized["schema"]["$ref"], error, "{method} {path}");
                }
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"], error,
                            "{method} {path} {status}"
                        );
                    }
                }
                if method != "get" {
                    assert!(responses.contains_key("403"), "{method} {path}: admin only");
                }
            }
        }
        assert!(operations >= 16, "{operations} operations");
        let put = &paths["/v1/jobs/{name}"]["put"]["responses"];
        assert!(put["413"].is_object(), "{put}");
        assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[test]
    fn the_dead_letter_routes_are_documented() {
        let document = document_json();
        let paths = &document["paths"];
        assert!(paths["/v1/jobs/{name}/dead-letters"]["get"].is_object());
        assert!(paths["/v1/jobs/{name}/dead-letters/letters"]["get"].is_object());
        let replay = &paths["/v1/jobs/{name}/dead-letters/replay"]["post"]["responses"];
        assert!(
            replay["202"].is_object() && replay["409"].is_object(),
            "{replay}"
        );
    }
}
