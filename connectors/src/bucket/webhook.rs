//! The HTTP endpoint S3 servers push notifications to (Ceph RGW `push-endpoint`, MinIO
//! `notify_webhook`, or anything that POSTs S3 event JSON).
//!
//! | request                                       | answer | effect                         |
//! |-----------------------------------------------|--------|--------------------------------|
//! | without the token, when one is configured     | 401    | nothing; logged                |
//! | S3 event JSON, stored in the spool            | 200    | its objects are processed      |
//! | `s3:TestEvent`, or only filtered-out events   | 200    | nothing                        |
//! | not S3 event JSON                             | 400    | logged with the reason; sender may retry or drop it |
//! | the spool cannot be written, or is full       | 503    | nothing more kept: the sender retries |
//!
//! Any path is accepted, so the endpoint URL configured on the server may carry a path.
//! The token (when configured) comes as `Authorization: Bearer <token>` (MinIO's
//! `notify_webhook` `auth_token`) or as a `token=<token>` query parameter (for senders
//! that cannot set headers, e.g. a Ceph RGW push endpoint URL). Listening beyond loopback
//! without a token logs a warning: anyone who can reach the port can queue work.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::notification::{NoticeFilter, ObjectNotice, parse_notification};
use super::spool::NoticeSpool;

/// The shared token requests must carry. `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookToken(String);

impl WebhookToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Whether `given` is the token, comparing every byte whatever the first difference.
    fn matches(&self, given: &str) -> bool {
        let (expected, given) = (self.0.as_bytes(), given.as_bytes());
        expected.len() == given.len()
            && expected
                .iter()
                .zip(given)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookToken(***)")
    }
}

/// What the endpoint serves.
pub struct Endpoint {
    pub job: String,
    pub filter: NoticeFilter,
    pub spool: NoticeSpool,
    pub notices: mpsc::Sender<ObjectNotice>,
    /// `None`: every request is accepted.
    pub token: Option<WebhookToken>,
}

/// The warning due for an endpoint on `listen`: one that listens beyond loopback without
/// a token lets anyone who reaches the port queue work.
pub fn exposure_warning(listen: SocketAddr, token: Option<&WebhookToken>) -> Option<&'static str> {
    (token.is_none() && !listen.ip().is_loopback()).then_some(
        "the bucket notification endpoint listens beyond loopback without authentication; set trigger.bucket.token = \"${NAME}\"",
    )
}

/// Binds `listen` and serves until `stop` is cancelled. Returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    endpoint: Endpoint,
    listen: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    if let Some(warning) = exposure_warning(bound, endpoint.token.as_ref()) {
        warn!(job = %endpoint.job, address = %bound, "{warning}");
    }
    let app = Router::new().fallback(receive).with_state(endpoint.clone());
    info!(job = %endpoint.job, address = %bound, authenticated = endpoint.token.is_some(), "listening for bucket notifications");
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

/// Whether the request carries the endpoint's token (always, when it has none).
fn authorized(token: Option<&WebhookToken>, headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(token) = token else {
        return true;
    };
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| token.matches(given.trim()));
    let query = uri.query().unwrap_or_default().split('&').any(|pair| {
        pair.strip_prefix("token=")
            .is_some_and(|given| token.matches(given))
    });
    bearer || query
}

async fn receive(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> (StatusCode, String) {
    if !authorized(endpoint.token.as_ref(), &headers, &uri) {
        warn!(job = %endpoint.job, path = %uri.path(), "refused a bucket notification without the token");
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong token; send Authorization: Bearer <token>\n".into(),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let token = WebhookToken::new("0123456789abcdef");
        assert!(token.matches("0123456789abcdef"));
        assert!(!token.matches("0123456789abcdeF"));
        assert!(!token.matches("0123456789abcdef0"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "WebhookToken(***)");
    }

    #[test]
    fn requests_carry_the_token_in_a_header_or_the_query() {
        let token = WebhookToken::new("0123456789abcdef");
        let uri: Uri = "/notify".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert!(authorized(None, &headers, &uri), "no token configured");
        assert!(!authorized(Some(&token), &headers, &uri));
        headers.insert("authorization", "Bearer 0123456789abcdef".parse().unwrap());
        assert!(authorized(Some(&token), &headers, &uri));
        headers.insert("authorization", "Bearer wrong".parse().unwrap());
        assert!(!authorized(Some(&token), &headers, &uri));
        let with_query: Uri = "/notify?x=1&token=0123456789abcdef".parse().unwrap();
        assert!(authorized(Some(&token), &HeaderMap::new(), &with_query));
    }

    #[test]
    fn an_open_endpoint_beyond_loopback_is_warned_about() {
        let token = WebhookToken::new("0123456789abcdef");
        let everywhere: SocketAddr = "0.0.0.0:9400".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:9400".parse().unwrap();
        assert!(exposure_warning(everywhere, None).is_some());
        assert!(exposure_warning(everywhere, Some(&token)).is_none());
        assert!(exposure_warning(loopback, None).is_none());
        assert!(exposure_warning("[::1]:9400".parse().unwrap(), None).is_none());
    }
}
