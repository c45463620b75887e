//! The status endpoint: `GET /status` (JSON: every job's [`JobStatus`]) and
//! `GET /metrics` (Prometheus text format), served until the shutdown token is cancelled.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::{JobState, JobStatus, StatusBoard};

/// Binds `addr` and serves the board in the background; returns the bound address (port
/// 0 picks a free one).
pub async fn serve(
    board: Arc<StatusBoard>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(board);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "status endpoint stopped");
        }
    });
    Ok(bound)
}

async fn status(State(board): State<Arc<StatusBoard>>) -> impl IntoResponse {
    let body = serde_json::json!({ "jobs": board.snapshot() }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(board): State<Arc<StatusBoard>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus_text(&board.snapshot()),
    )
}

/// The snapshot in Prometheus' text exposition format.
pub fn prometheus_text(jobs: &[JobStatus]) -> String {
    let mut out = String::new();
    let gauge = |out: &mut String,
                 name: &str,
                 help: &str,
                 kind: &str,
                 value: &dyn Fn(&JobStatus) -> Option<f64>| {
        let _ = writeln!(out, "# HELP sluice_{name} {help}");
        let _ = writeln!(out, "# TYPE sluice_{name} {kind}");
        for job in jobs {
            if let Some(value) = value(job) {
                let _ = writeln!(out, "sluice_{name}{{job=\"{}\"}} {value}", escape(&job.job));
            }
        }
    };
    gauge(
        &mut out,
        "job_up",
        "1 while the job is running or degraded",
        "gauge",
        &|j| {
            Some(f64::from(u8::from(matches!(
                j.state,
                JobState::Running | JobState::Degraded
            ))))
        },
    );
    gauge(
        &mut out,
        "job_degraded",
        "1 while a commit step keeps failing",
        "gauge",
        &|j| Some(f64::from(u8::from(j.state == JobState::Degraded))),
    );
    gauge(
        &mut out,
        "instances_busy",
        "function instances running a batch",
        "gauge",
        &|j| Some(f64::from(j.instances.busy)),
    );
    gauge(
        &mut out,
        "instances_busy_peak",
        "the most function instances that ran a batch at once since the job started",
        "gauge",
        &|j| Some(f64::from(j.instances.busy_peak)),
    );
    gauge(
        &mut out,
        "instances_idle",
        "warm function instances waiting for a batch",
        "gauge",
        &|j| Some(f64::from(j.instances.idle)),
    );
    gauge(
        &mut out,
        "instances_desired",
        "instances the autoscaler wants",
        "gauge",
        &|j| Some(f64::from(j.instances.desired)),
    );
    gauge(
        &mut out,
        "cold_starts_total",
        "function instances started",
        "counter",
        &|j| Some(j.cold_starts.count as f64),
    );
    gauge(
        &mut out,
        "cold_start_p50_seconds",
        "median spawn-to-ready time",
        "gauge",
        &|j| j.cold_starts.p50_ms.map(|ms| ms / 1000.0),
    );
    gauge(
        &mut out,
        "cold_start_p99_seconds",
        "99th percentile spawn-to-ready time",
        "gauge",
        &|j| j.cold_starts.p99_ms.map(|ms| ms / 1000.0),
    );
    gauge(
        &mut out,
        "backlog_records",
        "records waiting at the source",
        "gauge",
        &|j| j.backlog.map(|b| b as f64),
    );
    gauge(
        &mut out,
        "records_in_total",
        "records consumed",
        "counter",
        &|j| Some(j.stats.records_in as f64),
    );
    gauge(
        &mut out,
        "rows_out_total",
        "rows written",
        "counter",
        &|j| Some(j.stats.rows_out as f64),
    );
    gauge(
        &mut out,
        "dead_letters_total",
        "records and rows sent to the dead-letter destination",
        "counter",
        &|j| Some(j.stats.dead_letters as f64),
    );
    gauge(&mut out, "commits_total", "commits", "counter", &|j| {
        Some(j.stats.commits as f64)
    });
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_status_and_metrics() {
        let board = StatusBoard::new();
        let job = board.job("clicks");
        job.set_state(JobState::Running, None);
        job.update(|s| s.instances.busy = 3);
        let shutdown = CancellationToken::new();
        let addr = serve(
            Arc::clone(&board),
            "127.0.0.1:0".parse().unwrap(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let status = http_get(addr, "/status").await;
        assert!(status.contains(r#""state":"running""#), "{status}");
        assert!(status.contains(r#""busy":3"#), "{status}");
        let metrics = http_get(addr, "/metrics").await;
        assert!(
            metrics.contains("sluice_instances_busy{job=\"clicks\"} 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains("sluice_job_up{job=\"clicks\"} 1"),
            "{metrics}"
        );
        shutdown.cancel();
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }
}
