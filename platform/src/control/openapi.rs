//! The OpenAPI 3.1 document of the API, served at `/v1/openapi.json`, built from the
//! route table [`ROUTES`] kept beside the router in [`super::api`]. The end-to-end test
//! calls every documented route and checks the answer is one the document lists.

use serde_json::{Map, Value, json};

/// One documented operation.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// `None`: no token needed.
    pub role: Option<&'static str>,
    /// Successful status and what its body is.
    pub ok: (u16, &'static str),
    /// Error statuses besides 401/403 (added when a role is needed).
    pub errors: &'static [u16],
    /// The request body's media type, if any.
    pub body: Option<&'static str>,
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/healthz",
        summary: "the process answers",
        role: None,
        ok: (200, "text"),
        errors: &[],
        body: None,
    },
    Route {
        method: "get",
        path: "/readyz",
        summary: "the registry answers",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[503],
        body: None,
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics of every job",
        role: Some("read"),
        ok: (200, "text"),
        errors: &[],
        body: None,
    },
    Route {
        method: "get",
        path: "/v1/jobs",
        summary: "every job with its version, state and status",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[503],
        body: None,
    },
    Route {
        method: "get",
        path: "/v1/jobs/{name}",
        summary: "one job, with its job.toml",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[404, 503],
        body: None,
    },
    Route {
        method: "put",
        path: "/v1/jobs/{name}",
        summary: "deploy a bundle (.tar.gz of the job folder) as the job's next version",
        role: Some("admin"),
        ok: (201, "json"),
        errors: &[400, 413, 503],
        body: Some("application/octet-stream"),
    },
    Route {
        method: "delete",
        path: "/v1/jobs/{name}",
        summary: "drain and stop the job and remove it from the list",
        role: Some("admin"),
        ok: (200, "json"),
        errors: &[404, 503],
        body: None,
    },
    Route {
        method: "post",
        path: "/v1/jobs/{name}/pause",
        summary: "drain the job and hold it",
        role: Some("admin"),
        ok: (200, "json"),
        errors: &[404, 503],
        body: None,
    },
    Route {
        method: "post",
        path: "/v1/jobs/{name}/resume",
        summary: "run the job again from its committed positions",
        role: Some("admin"),
        ok: (200, "json"),
        errors: &[404, 503],
        body: None,
    },
    Route {
        method: "post",
        path: "/v1/jobs/{name}/rollback",
        summary: "run an earlier version: body {\"version\": N}, or empty for the one before the current",
        role: Some("admin"),
        ok: (200, "json"),
        errors: &[400, 404, 503],
        body: Some("application/json"),
    },
    Route {
        method: "get",
        path: "/v1/jobs/{name}/versions",
        summary: "the job's versions",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[404, 503],
        body: None,
    },
    Route {
        method: "get",
        path: "/v1/jobs/{name}/invocations",
        summary: "the job's newest batch attempts (query: limit, 1 to 10000)",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[400, 404, 503],
        body: None,
    },
    Route {
        method: "get",
        path: "/v1/jobs/{name}/logs",
        summary: "the function's stderr lines on this node, with instance and batch (query: limit, from; follow=true streams NDJSON)",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[400, 404, 503],
        body: None,
    },
    Route {
        method: "get",
        path: "/v1/openapi.json",
        summary: "this document",
        role: Some("read"),
        ok: (200, "json"),
        errors: &[],
        body: None,
    },
];

fn error_response(status: u16) -> Value {
    let description = match status {
        400 => "the request or bundle is invalid",
        401 => "no valid token",
        403 => "the token is read-only",
        404 => "no such job",
        413 => "the body is over the limit",
        _ => "the registry is unavailable",
    };
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut responses = Map::new();
        let content = match route.ok.1 {
            "json" => json!({"application/json": {"schema": {"type": "object"}}}),
            _ => json!({"text/plain": {"schema": {"type": "string"}}}),
        };
        responses.insert(
            route.ok.0.to_string(),
            json!({"description": "done", "content": content}),
        );
        if route.method == "put" {
            responses.insert(
                "200".to_owned(),
                json!({"description": "the same content was deployed before: its version", "content": content}),
            );
        }
        let auth_errors: &[u16] = match route.role {
            Some("admin") => &[401, 403],
            Some(_) => &[401],
            None => &[],
        };
        for status in auth_errors.iter().chain(route.errors) {
            responses.insert(status.to_string(), error_response(*status));
        }
        let mut operation = json!({
            "summary": route.summary,
            "responses": responses,
            "security": if route.role.is_some() { json!([{"bearer": []}]) } else { json!([]) },
        });
        if route.path.contains("{name}") {
            operation["parameters"] = json!([{
                "name": "name", "in": "path", "required": true,
                "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}
            }]);
        }
        if let Some(media) = route.body {
            operation["requestBody"] = json!({
                "required": media == "application/octet-stream",
                "content": {media: {"schema": if media == "application/octet-stream" {
                    json!({"type": "string", "format": "binary"})
                } else {
                    json!({"type": "object"})
                }}}
            });
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Sluice control API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "string"}}
                    }
                }}
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_errors() {
        let document = document();
        let paths = document["paths"].as_object().unwrap();
        for route in ROUTES {
            let operation = &paths[route.path][route.method];
            assert!(operation.is_object(), "{} {}", route.method, route.path);
            if route.role == Some("admin") {
                assert!(operation["responses"]["403"].is_object());
            }
        }
        assert_eq!(
            document["paths"]["/v1/jobs/{name}"]["put"]["responses"]["413"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }
}
