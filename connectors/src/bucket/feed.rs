//! Notifications arriving on a broker: an AMQP queue or a Kafka topic whose messages are
//! S3 event JSON (Ceph RGW `push-endpoint=amqp://…` or `kafka://…`, MinIO `notify_amqp` /
//! `notify_kafka`, or anything that publishes such bodies).
//!
//! The messages are consumed with the AMQP or Kafka connector itself (the same source the
//! `[trigger.amqp]` / `[trigger.kafka]` triggers use), in a task of its own. Each message
//! is parsed, its notices filtered, and every accepted notice put in the durable spool
//! (see [`super::spool`]) before the message is acknowledged: a kill at any instant loses
//! nothing (an unacknowledged message is redelivered, and a spooled notice is picked up on
//! start). The same notice spooled twice is one entry.
//!
//! | message                                          | spool                  | acknowledgement                                      |
//! |--------------------------------------------------|------------------------|------------------------------------------------------|
//! | S3 event JSON                                    | accepted notices put   | after the puts                                       |
//! | `s3:TestEvent`, or only filtered-out events      | nothing                | at once                                              |
//! | not S3 event JSON                                | nothing                | never: reported (feed, position, reason, excerpt); AMQP: that delivery stays unacknowledged until the job stops; Kafka: the partition's offset is not committed past it (later messages are still processed) |
//! | the spool cannot be written                      | retried with backoff   | only once the put succeeds                           |
//!
//! Until dead-letter destinations take malformed notifications, they stay unacknowledged
//! so the broker keeps them; the error log names where each one is.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::notification::{NoticeFilter, ObjectNotice, parse_notification};
use super::spool::NoticeSpool;
use crate::amqp::AmqpSourceConfig;
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::{Event, Origin};
use crate::kafka::KafkaSourceConfig;
use crate::source::{Source, SourceError};

/// First wait before retrying a failed spool write or broker read; doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Characters of a malformed body shown in its report.
const EXCERPT_CHARS: usize = 200;

/// Where a bucket source in notification mode receives notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationFeed {
    /// An HTTP endpoint Sluice serves (see [`super::webhook`]); with a token, only
    /// requests that carry it are accepted.
    Webhook {
        listen: std::net::SocketAddr,
        token: Option<super::webhook::WebhookToken>,
    },
    /// Messages on an AMQP queue.
    Amqp(AmqpSourceConfig),
    /// Messages on a Kafka topic, consumed with a consumer group.
    Kafka(KafkaSourceConfig),
}

impl NotificationFeed {
    /// The feed for logs: `amqp queue <q>`, `kafka topic <t>`, `webhook <addr>`.
    pub fn describe(&self) -> String {
        match self {
            NotificationFeed::Webhook { listen, .. } => format!("webhook {listen}"),
            NotificationFeed::Amqp(config) => format!("amqp queue {}", config.queue),
            NotificationFeed::Kafka(config) => format!("kafka topic {}", config.topic),
        }
    }
}

/// Why a feed stopped.
#[derive(Debug)]
pub(crate) enum FeedStop {
    /// Asked to stop, or the bucket source is gone.
    Stopped,
    /// The broker source failed in a way retrying cannot fix.
    Failed(SourceError),
}

/// Consumes notification messages from a broker source into the spool and the bucket
/// source's notice channel. See the module docs.
pub(crate) struct Feed<S> {
    pub(crate) job: String,
    pub(crate) source: S,
    pub(crate) filter: NoticeFilter,
    pub(crate) spool: NoticeSpool,
    pub(crate) notices: mpsc::Sender<ObjectNotice>,
    pub(crate) stop: CancellationToken,
    /// Kafka partitions holding a malformed message: not committed past it.
    pub(crate) held: HashSet<SplitId>,
}

impl<S: Source> Feed<S> {
    /// Runs until stopped or the source fails for good; closes the source (nothing
    /// unacknowledged is lost: the broker redelivers it).
    pub(crate) async fn run(mut self) -> S {
        let mut backoff = MIN_BACKOFF;
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => break,
                next = self.source.next_events() => next,
            };
            let outcome = match next {
                Ok(Some(events)) => {
                    backoff = MIN_BACKOFF;
                    self.take(events).await
                }
                Ok(None) => {
                    info!(job = %self.job, "notification feed ended");
                    break;
                }
                Err(error @ SourceError::Unavailable { .. }) => {
                    warn!(job = %self.job, %error, "cannot read bucket notifications; retrying");
                    pause(&self.stop, &mut backoff).await
                }
                Err(error) => Err(FeedStop::Failed(error)),
            };
            match outcome {
                Ok(()) => {}
                Err(FeedStop::Stopped) => break,
                Err(FeedStop::Failed(error)) => {
                    error!(job = %self.job, %error, "the bucket notification feed stopped");
                    break;
                }
            }
        }
        self.source.close().await;
        self.source
    }

    /// Spools the notices of `events`, hands them to the bucket source, then acknowledges
    /// every message that is not malformed.
    pub(crate) async fn take(&mut self, events: Vec<Event>) -> Result<(), FeedStop> {
        let mut ready = CheckpointDelta::new();
        for event in events {
            let split = event.origin.split();
            let position = event.origin.position();
            match parse_notification(&event.payload) {
                Ok(notices) => {
                    let accepted: Vec<ObjectNotice> = notices
                        .into_iter()
                        .filter(|n| self.filter.accepts(n))
                        .collect();
                    for notice in accepted {
                        self.spool_notice(&notice).await?;
                        self.notices
                            .send(notice)
                            .await
                            .map_err(|_| FeedStop::Stopped)?;
                    }
                    if !self.held.contains(&split) {
                        // Positions of one split grow: recording cannot go backwards.
                        if let Err(error) = ready.record(&split, position) {
                            return Err(FeedStop::Failed(SourceError::Internal {
                                connector: "bucket",
                                message: error.to_string(),
                            }));
                        }
                    }
                }
                Err(problem) => {
                    let excerpt: String = String::from_utf8_lossy(&event.payload)
                        .chars()
                        .take(EXCERPT_CHARS)
                        .collect();
                    let origin = event.origin.to_json().to_string();
                    error!(job = %self.job, %origin, error = %problem, body = %excerpt, "malformed bucket notification; it is not acknowledged and stays with the broker");
                    // Acknowledge what came before it, then leave it out.
                    self.acknowledge(std::mem::take(&mut ready)).await?;
                    if matches!(event.origin, Origin::Kafka { .. }) {
                        self.held.insert(split);
                    }
                }
            }
        }
        self.acknowledge(ready).await
    }

    async fn acknowledge(&mut self, delta: CheckpointDelta) -> Result<(), FeedStop> {
        if delta.is_empty() {
            return Ok(());
        }
        // A failed ack leaves the messages with the broker: redelivered later, and their
        // notices spooled again (one entry each), so nothing is lost or doubled.
        if let Err(error) = self.source.ack(&delta).await {
            warn!(job = %self.job, %error, positions = %delta, "could not acknowledge bucket notifications; the broker redelivers them");
        }
        Ok(())
    }

    async fn spool_notice(&mut self, notice: &ObjectNotice) -> Result<(), FeedStop> {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.spool.put(notice).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    warn!(job = %self.job, %error, key = %notice.key, "could not keep a bucket notification; retrying before acknowledging it");
                    pause(&self.stop, &mut backoff).await?;
                }
            }
        }
    }
}

/// Waits `backoff` (or until `stop`), then doubles it up to [`MAX_BACKOFF`].
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> Result<(), FeedStop> {
    tokio::select! {
        () = stop.cancelled() => return Err(FeedStop::Stopped),
        () = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;
    use object_store::path::Path;

    use super::*;
    use crate::vec_source::VecSource;

    fn good(key: &str) -> String {
        format!(
            r#"{{"Records":[{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"landing"}},"object":{{"key":"{key}","size":3,"eTag":"e1"}}}}}}]}}"#
        )
    }

    fn amqp(seq: i64, body: impl Into<bytes::Bytes>) -> Event {
        Event::from_payload(
            body,
            Origin::Amqp {
                queue: Arc::from("notices"),
                seq,
                delivery_tag: seq as u64,
                message_id: None,
                exchange: "s3".into(),
                routing_key: "topic".into(),
                redelivered: false,
            },
        )
    }

    fn kafka(offset: i64, body: impl Into<bytes::Bytes>) -> Event {
        Event::from_payload(
            body,
            Origin::Kafka {
                topic: Arc::from("notices"),
                partition: 0,
                offset,
            },
        )
    }

    fn feed(events: Vec<Event>) -> (Feed<VecSource>, mpsc::Receiver<ObjectNotice>) {
        let (notices, received) = mpsc::channel(16);
        let feed = Feed {
            job: "t".into(),
            source: VecSource::new(events, 10),
            filter: NoticeFilter::default(),
            spool: NoticeSpool::new(Arc::new(InMemory::new()), Path::from("_sluice/notices")),
            notices,
            stop: CancellationToken::new(),
            held: HashSet::new(),
        };
        (feed, received)
    }

    fn acked(source: &VecSource) -> Vec<String> {
        source.acked.iter().map(ToString::to_string).collect()
    }

    #[tokio::test]
    async fn notices_are_spooled_before_their_message_is_acknowledged() {
        let test_event = br#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#;
        let (feed, mut received) = feed(vec![
            amqp(1, good("a+1.csv")),
            amqp(2, &test_event[..]),
            amqp(3, good("b.csv")),
        ]);
        let spool = feed.spool.clone();
        let source = feed.run().await;
        assert_eq!(acked(&source), ["amqp:notices:1..=3"]);
        let keys: Vec<String> = spool
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.key)
            .collect();
        assert_eq!(keys, ["a 1.csv", "b.csv"]);
        assert_eq!(received.recv().await.unwrap().key, "a 1.csv");
        assert_eq!(received.recv().await.unwrap().key, "b.csv");
    }

    #[tokio::test]
    async fn a_malformed_amqp_message_alone_stays_unacknowledged() {
        let (mut feed, _received) = feed(Vec::new());
        feed.take(vec![
            amqp(1, good("a.csv")),
            amqp(2, &b"{not json"[..]),
            amqp(3, good("b.csv")),
            amqp(4, good("c.csv")),
        ])
        .await
        .unwrap();
        assert_eq!(
            acked(&feed.source),
            ["amqp:notices:1..=1", "amqp:notices:3..=4"]
        );
        assert_eq!(feed.spool.list().await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_malformed_kafka_message_holds_its_partition_offset() {
        let (mut feed, _received) = feed(Vec::new());
        feed.take(vec![
            kafka(10, good("a.csv")),
            kafka(
                11,
                &br#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#[..],
            ),
            kafka(12, good("b.csv")),
        ])
        .await
        .unwrap();
        feed.take(vec![kafka(13, good("c.csv"))]).await.unwrap();
        // Later messages are processed, but the offset never moves past the malformed one.
        assert_eq!(acked(&feed.source), ["notices/0:10..=10"]);
        assert_eq!(feed.spool.list().await.unwrap().len(), 3);
    }
}
