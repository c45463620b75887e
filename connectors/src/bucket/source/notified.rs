//! Notification mode of the bucket source: the feed (HTTP endpoint, AMQP queue or Kafka
//! topic), the spool, and queueing notified objects (see [`crate::bucket::feed`],
//! [`crate::bucket::spool`] and [`crate::bucket::webhook`]).
//!
//! A notice whose key listing would skip (a segment starting with `_` or `.`) is dropped
//! from the spool. A notified object that does not exist is looked for again (at most
//! every [`MISSING_RETRY`]) until `missing_timeout` after the notice was received; then
//! the notice is given up: one dead-letter event (the notice as payload, the reason as
//! `Event::unreadable`) that, once acknowledged, marks the object version done and takes
//! the notice out of the spool. Nothing stays in the spool forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{BucketSource, CONNECTOR, InFlight, Notifications, Pending, Reading};
use crate::amqp::AmqpSource;
use crate::bucket::feed::{Feed, NotificationFeed};
use crate::bucket::notification::{NoticeFilter, ObjectNotice};
use crate::bucket::spool::NoticeSpool;
use crate::bucket::spool::now_ms;
use crate::bucket::webhook;
use crate::checkpoint::SplitId;
use crate::event::{Event, Origin};
use crate::kafka::KafkaSource;
use crate::source::{Source, SourceError};

impl BucketSource {
    /// Queues what the spool still holds, then starts the feed: the HTTP endpoint, or a
    /// task consuming the AMQP queue or Kafka topic (see [`crate::bucket::feed`]).
    pub(super) async fn start_notifications(
        &mut self,
        feed: Box<NotificationFeed>,
        filter: NoticeFilter,
        spool: NoticeSpool,
    ) -> Result<(), SourceError> {
        // Notifications accepted before a restart are still in the spool.
        let spooled = spool
            .list()
            .await
            .map_err(|message| SourceError::Unavailable {
                connector: CONNECTOR,
                message,
            })?;
        let recovered = spooled.len();
        for notice in spooled {
            self.queue_notice(notice);
        }
        let (sender, notices) = mpsc::channel(1024);
        let stop = CancellationToken::new();
        let job = self.config.job.clone();
        info!(job = %job, feed = %feed.describe(), spooled = recovered, done = self.cursor.len(), "bucket source waiting for notifications");
        let address = match *feed {
            NotificationFeed::Webhook { listen, token } => Some(
                webhook::serve(
                    webhook::Endpoint {
                        job,
                        filter,
                        spool: spool.clone(),
                        notices: sender,
                        token,
                    },
                    listen,
                    stop.clone(),
                )
                .await
                .map_err(|e| SourceError::Config {
                    connector: CONNECTOR,
                    message: format!("cannot listen for notifications on {listen}: {e}"),
                })?,
            ),
            NotificationFeed::Amqp(config) => {
                let source = AmqpSource::connect(config).await?;
                spawn_feed(job, source, filter, spool.clone(), sender, stop.clone());
                None
            }
            NotificationFeed::Kafka(config) => {
                let source = KafkaSource::connect(config).await?;
                spawn_feed(job, source, filter, spool.clone(), sender, stop.clone());
                None
            }
        };
        self.notifications = Some(Notifications {
            notices,
            spool,
            address,
            stop,
        });
        Ok(())
    }

    /// Where notifications are received, in notification mode with a webhook.
    pub fn notification_address(&self) -> Option<SocketAddr> {
        self.notifications.as_ref().and_then(|n| n.address)
    }

    /// Waits for the next notification, or until a missing object is due to be looked
    /// for again; queues what is to be read.
    pub(super) async fn next_notice(&mut self) -> Result<bool, SourceError> {
        let due = self.queue.next_due();
        let Some(notifications) = &mut self.notifications else {
            return Ok(false);
        };
        let notice = tokio::select! {
            notice = notifications.notices.recv() => notice,
            () = sleep_until_some(due) => {
                self.queue.release_due(Instant::now());
                return Ok(true);
            }
        };
        let Some(notice) = notice else {
            return Err(SourceError::Internal {
                connector: CONNECTOR,
                message: "the notification feed stopped (see the error before this one)".into(),
            });
        };
        self.queue_notice(notice);
        Ok(true)
    }

    /// A notified object was not found: look again later, or give the notice up once
    /// it has been missing for `missing_timeout` (see the module docs).
    pub(super) fn notified_object_missing(&mut self, reading: Reading, message: &str) {
        let Some(notice) = reading.notice else {
            return;
        };
        let id = (reading.key.clone(), reading.etag.clone());
        let now = now_ms();
        let since = *self
            .missing_since
            .entry(id.clone())
            .or_insert_with(|| notice.received_ms.unwrap_or(now).min(now));
        let timeout = self.config.missing_timeout;
        let waited = Duration::from_millis(now.saturating_sub(since));
        if waited < timeout {
            let retry = (timeout - waited).min(MISSING_RETRY);
            debug!(job = %self.config.job, key = %reading.key, error = message, ?retry, "notified object not found; looking again");
            self.queue.put_back(
                Instant::now() + retry,
                Pending {
                    location: object_location(&reading.key),
                    key: reading.key,
                    etag: notice.etag.clone(),
                    notice: Some(notice),
                },
            );
            return;
        }
        self.missing_since.remove(&id);
        let reason = format!(
            "the notified object {:?} was still missing {}s after its notification; the notification is given up ({message})",
            reading.key,
            timeout.as_secs_f64()
        );
        warn!(job = %self.config.job, key = %reading.key, "notified object still missing; sending its notification to the dead-letter destination");
        let origin = Origin::Object {
            bucket: self.bucket.clone(),
            key: Arc::from(reading.key.as_str()),
            etag: notice.etag.as_deref().map(Arc::from),
            line: 1,
        };
        let payload = serde_json::to_vec(&notice).unwrap_or_default();
        self.given_up.push(Event {
            unreadable: Some(Arc::from(reason)),
            ..Event::from_payload(payload, origin)
        });
        self.in_flight.insert(
            reading.split,
            InFlight {
                key: reading.key,
                etag: reading.etag,
                last: Some(1),
                notice: Some(notice),
            },
        );
    }

    /// Queues a notified object unless it is done already (a repeated notification) or
    /// being processed: queued already (to read, or to look for again), being read, or
    /// waiting for its acknowledgement. Each check is a lookup, not a scan (see `queue`),
    /// so a burst of notices costs what each notice costs.
    pub(super) fn queue_notice(&mut self, notice: ObjectNotice) {
        let relative = self.relative_key(&object_location(&notice.key));
        if relative
            .split('/')
            .any(|segment| segment.starts_with('_') || segment.starts_with('.'))
        {
            debug!(job = %self.config.job, key = %notice.key, "notification for a key listing skips (a segment starts with _ or .); dropped");
            self.dropping.push_back(notice);
            return;
        }
        let etag = notice.etag.clone().unwrap_or_default();
        if self.cursor.is_done(&notice.key, &etag) {
            info!(job = %self.config.job, key = %notice.key, "repeated notification for an object already done; dropped");
            // Out of the spool at the next `settle`.
            self.dropping.push_back(notice);
            return;
        }
        // The split of the object version, as `start_reading` makes it: the key of
        // `in_flight`.
        let split = SplitId::object(&self.bucket, &notice.key, &etag);
        let busy = self.in_flight.contains_key(&split)
            || self
                .reading
                .as_ref()
                .is_some_and(|r| r.key == notice.key && r.etag == etag);
        if busy {
            return;
        }
        // Leaves an object queued already as it is.
        self.queue.push(Pending {
            location: object_location(&notice.key),
            key: notice.key.clone(),
            etag: notice.etag.clone(),
            notice: Some(notice),
        });
    }
}

impl Drop for BucketSource {
    fn drop(&mut self) {
        if let Some(notifications) = &self.notifications {
            notifications.stop.cancel();
        }
    }
}

/// The longest wait before a missing notified object is looked for again.
pub const MISSING_RETRY: Duration = Duration::from_secs(30);

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs a broker feed in a task of its own; it stops with `stop` (cancelled when the
/// bucket source is dropped) and closes its source.
fn spawn_feed<S: Source + 'static>(
    job: String,
    source: S,
    filter: NoticeFilter,
    spool: NoticeSpool,
    notices: mpsc::Sender<ObjectNotice>,
    stop: CancellationToken,
) {
    let feed = Feed {
        job,
        source,
        filter,
        spool,
        notices,
        stop,
        held: std::collections::HashSet::new(),
    };
    tokio::spawn(async move {
        feed.run().await;
    });
}

/// The store path of a notified key, taken as it is (`Path::parse` keeps unicode, spaces
/// and `+`); a key `Path` cannot hold verbatim (an empty or `.` segment) is encoded.
pub fn object_location(key: &str) -> Path {
    Path::parse(key).unwrap_or_else(|_| Path::from(key))
}
