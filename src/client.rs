//! The HTTP client of `sluice deploy` and `sluice jobs`: the server from
//! `--server`/`SLUICE_SERVER`, the token from `SLUICE_TOKEN`, the API's one error shape
//! turned into a message and an exit code.
//!
//! Exit codes scripts can rely on:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | refused: invalid job or bundle, no such job, a deployment that did not start |
//! | 2 | bad command line |
//! | 3 | the server cannot be reached or failed (5xx) |
//! | 4 | not allowed: missing or wrong token (401), read-only token (403) |

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// The default server of `sluice serve --listen`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8470";

/// Why a call did not succeed; [`ClientError::exit_code`] maps it for scripts.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Unreachable { .. } => ExitCode::from(3),
            Self::Refused { status, .. } if *status >= 500 => ExitCode::from(3),
            Self::Refused {
                status: 401 | 403, ..
            } => ExitCode::from(4),
            Self::Refused { .. } | Self::Failed(_) => ExitCode::from(1),
        }
    }

    /// Prints the error and its details to stderr; returns the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("sluice: {self}");
        if let Self::Refused { details, .. } = self {
            for detail in details {
                eprintln!("  {detail}");
            }
        }
        self.exit_code()
    }
}

/// The exit code of a command that talks to a server: success, or the error reported.
pub fn exit_code_of(result: Result<(), ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}

/// A connection to one server.
pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `server` (or `SLUICE_SERVER`, or the default) and `SLUICE_TOKEN`.
    pub fn new(server: Option<String>) -> Result<Self, ClientError> {
        let server = server
            .or_else(|| std::env::var("SLUICE_SERVER").ok())
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let server = server.trim_end_matches('/').to_owned();
        let token = std::env::var("SLUICE_TOKEN")
            .ok()
            .filter(|token| !token.is_empty());
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|error| ClientError::Failed(format!("starting the http client: {error}")))?;
        Ok(Self {
            server,
            token,
            http,
        })
    }

    /// Sends a request; a 2xx answer's JSON body, or the API's error.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            server: self.server.clone(),
            reason: error.without_url().to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        Err(ClientError::Refused {
            status: status.as_u16(),
            message: error["message"]
                .as_str()
                .map_or_else(|| format!("the server answered {status}"), str::to_owned),
            details: error["details"]
                .as_array()
                .map(|details| {
                    details
                        .iter()
                        .filter_map(|detail| detail.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Starts a GET whose body streams (no overall timeout); a 2xx response, or the API's
    /// error.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.server))
            .timeout(Duration::from_secs(10 * 365 * 24 * 3600));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| ClientError::Unreachable {
                server: self.server.clone(),
                reason: error.without_url().to_string(),
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value =
            serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null);
        Err(ClientError::Refused {
            status: status.as_u16(),
            message: body["error"]["message"]
                .as_str()
                .map_or_else(|| format!("the server answered {status}"), str::to_owned),
            details: Vec::new(),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }
}
