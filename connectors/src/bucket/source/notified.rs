//! Notification mode of the bucket source: the feed (HTTP endpoint, AMQP queue or Kafka
//! topic), the spool, and queueing notified objects (see [`crate::bucket::feed`],
//! [`crate::bucket::spool`] and [`crate::bucket::webhook`]).

use std::net::SocketAddr;

use object_store::path::Path;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{BucketSource, CONNECTOR, Notifications, Pending};
use crate::amqp::AmqpSource;
use crate::bucket::feed::{Feed, NotificationFeed};
use crate::bucket::notification::{NoticeFilter, ObjectNotice};
use crate::bucket::spool::NoticeSpool;
use crate::bucket::webhook;
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

    /// Queues a notified object unless it is done already (a repeated notification) or
    /// being processed.
    pub(super) fn queue_notice(&mut self, notice: ObjectNotice) {
        let etag = notice.etag.clone().unwrap_or_default();
        if self.cursor.is_done(&notice.key, &etag) {
            info!(job = %self.config.job, key = %notice.key, "repeated notification for an object already done; dropped");
            // Out of the spool at the next `settle`.
            self.dropping.push_back(notice);
            return;
        }
        let busy = self
            .in_flight
            .values()
            .any(|f| f.key == notice.key && f.etag == etag)
            || self
                .reading
                .as_ref()
                .is_some_and(|r| r.key == notice.key && r.etag == etag)
            || self
                .pending
                .iter()
                .any(|p| p.key == notice.key && p.etag.as_deref().unwrap_or("") == etag);
        if busy {
            return;
        }
        self.pending.push_back(Pending {
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
