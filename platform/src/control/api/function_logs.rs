//! `GET /v1/jobs/{name}/logs`: the function's stderr lines on this node (see
//! [`crate::control::logs`]), as `{"lines": [...]}`, or with `follow=true` as a stream of
//! NDJSON lines (chunked) that continues with each new line until the client goes away or
//! the server stops.
//!
//! Query: `limit` (lines of history, 1 to [`RING_LINES`], default 200), `from` (the first
//! `seq` wanted, default: the oldest kept), `follow` (`true` or `false`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, json_response, query_value};
use crate::control::auth::Caller;
use crate::control::logs::{JobLog, LogLine, RING_LINES};
use crate::control::openapi::{ErrorBody, JobName, JobRefusals};
use crate::control::registry::now_ms;

/// How long a followed line waits for its batch id before it is sent without one.
const HOLD_FOR_BATCH_MS: i64 = 2_000;
/// How often a follower with lines held back looks again.
const HOLD_POLL: Duration = Duration::from_millis(250);
/// Longest wait for a new line before looking at the stop signal again.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// `?limit=&from=&follow=` of the logs route.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents the query, which the handler parses from the URI"
)]
pub(super) struct LogsQuery {
    /// Lines of history, from 1 to 5000 (default 200).
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<i64>,
    /// The first `seq` wanted (default: the oldest kept).
    #[param(minimum = 0)]
    from: Option<i64>,
    /// `true`: stream new lines as NDJSON until the client goes away.
    follow: Option<bool>,
}

/// One stderr line of the job's function.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct LogLineView {
    seq: u64,
    time_ms: i64,
    instance: String,
    batch: Option<String>,
    line: String,
}

/// The lines kept of the job's function stderr.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct LogLines {
    lines: Vec<LogLineView>,
}

/// The job's function stderr lines on this node; `follow=true` streams them as NDJSON.
#[utoipa::path(get, path = "/v1/jobs/{name}/logs", params(JobName, LogsQuery), security(("bearer" = [])), responses(
    (status = 200, description = "the lines (`follow=true`: one JSON line per stderr line, streamed)",
        content((LogLines = "application/json"), (LogLineView = "application/x-ndjson"))),
    (status = 400, description = "`limit`, `from` or `follow` out of range", body = ErrorBody),
    JobRefusals,
))]
pub(super) async fn logs(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let limit = match query_value(&uri, "limit") {
        None => 200,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=RING_LINES).contains(limit))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be an integer from 1 to {RING_LINES}"))
            })?,
    };
    let from = match query_value(&uri, "from") {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .and_then(|from| u64::try_from(from).ok())
            .ok_or_else(|| ApiError::bad_request("from must be a line number (seq) from 0"))?,
    };
    let follow = match query_value(&uri, "follow") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("follow must be true or false")),
    };
    let context = state.supervisor.context();
    context
        .registry
        .job(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(&name))?;
    let log = context.logs.job(&name);
    let lines = log.lines(from, limit);
    if !follow {
        return Ok(json_response(StatusCode::OK, &json!({ "lines": lines })));
    }
    let cursor = lines
        .last()
        .map_or_else(|| log.next_seq().max(from), |line| line.seq + 1);
    let history = ndjson(&lines);
    let follower = Follower {
        log,
        cursor,
        closed: context.logs.closed().clone(),
    };
    let stream = futures::stream::once(async move { Ok(history) }).chain(futures::stream::unfold(
        follower,
        |mut follower| async move {
            let chunk = follower.next_chunk().await?;
            Some((Ok::<_, std::convert::Infallible>(chunk), follower))
        },
    ));
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A `follow=true` reader: sends each new line once its batch is known or it has waited
/// [`HOLD_FOR_BATCH_MS`].
struct Follower {
    log: Arc<JobLog>,
    cursor: u64,
    closed: CancellationToken,
}

impl Follower {
    /// The next lines as NDJSON; none once the server stops.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.closed.is_cancelled() {
                return None;
            }
            let now = now_ms();
            let ready: Vec<LogLine> = self
                .log
                .lines(self.cursor, usize::MAX)
                .into_iter()
                .take_while(|line| line.batch.is_some() || now - line.time_ms >= HOLD_FOR_BATCH_MS)
                .collect();
            if let Some(last) = ready.last() {
                self.cursor = last.seq + 1;
                return Some(ndjson(&ready));
            }
            let held = self.log.next_seq() > self.cursor;
            let wait = async {
                if held {
                    tokio::time::sleep(HOLD_POLL).await;
                } else {
                    self.log.wait_for(self.cursor, IDLE_POLL).await;
                }
            };
            tokio::select! {
                () = wait => {}
                () = self.closed.cancelled() => return None,
            }
        }
    }
}

fn ndjson(lines: &[LogLine]) -> Bytes {
    let mut text = String::new();
    for line in lines {
        if let Ok(json) = serde_json::to_string(line) {
            text.push_str(&json);
            text.push('\n');
        }
    }
    Bytes::from(text)
}
