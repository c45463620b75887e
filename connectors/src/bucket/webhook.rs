//! The HTTP endpoint S3 servers push notifications to (Ceph RGW `push-endpoint`, MinIO
//! `notify_webhook`, or anything that POSTs S3 event JSON).
//!
//! | request body                                  | answer | effect                         |
//! |-----------------------------------------------|--------|--------------------------------|
//! | S3 event JSON, stored in the spool            | 200    | its objects are processed      |
//! | `s3:TestEvent`, or only filtered-out events   | 200    | nothing                        |
//! | not S3 event JSON                             | 400    | logged with the reason; sender may retry or drop it |
//! | the spool cannot be written                   | 503    | nothing kept: the sender retries |
//!
//! Any path is accepted, so the endpoint URL configured on the server may carry a path.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::notification::{NoticeFilter, ObjectNotice, parse_notification};
use super::spool::NoticeSpool;

struct Endpoint {
    job: String,
    filter: NoticeFilter,
    spool: NoticeSpool,
    notices: mpsc::Sender<ObjectNotice>,
}

/// Binds `listen` and serves until `stop` is cancelled. Returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    job: String,
    listen: SocketAddr,
    filter: NoticeFilter,
    spool: NoticeSpool,
    notices: mpsc::Sender<ObjectNotice>,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let endpoint = Arc::new(Endpoint {
        job,
        filter,
        spool,
        notices,
    });
    let app = Router::new().fallback(receive).with_state(endpoint.clone());
    info!(job = %endpoint.job, address = %bound, "listening for bucket notifications");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            warn!(job = %endpoint.job, %error, "notification endpoint stopped");
        }
    });
    Ok(bound)
}

async fn receive(State(endpoint): State<Arc<Endpoint>>, body: Bytes) -> (StatusCode, String) {
    let notices = match parse_notification(&body) {
        Ok(notices) => notices,
        Err(error) => {
            let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            warn!(job = %endpoint.job, %error, body = %excerpt, "rejected a malformed bucket notification");
            return (StatusCode::BAD_REQUEST, format!("{error}\n"));
        }
    };
    let mut accepted = 0;
    for notice in notices.into_iter().filter(|n| endpoint.filter.accepts(n)) {
        if let Err(error) = endpoint.spool.put(&notice).await {
            warn!(job = %endpoint.job, %error, key = %notice.key, "could not keep a bucket notification; the sender must retry");
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"));
        }
        accepted += 1;
        if endpoint.notices.send(notice).await.is_err() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the job is stopping\n".into(),
            );
        }
    }
    (StatusCode::OK, format!("{accepted} accepted\n"))
}
