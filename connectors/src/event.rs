//! The unit of input: one broker message with its metadata and where it came from.

use std::sync::Arc;

use bytes::Bytes;

use crate::checkpoint::SplitId;

/// One message header. Kafka allows a header without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Shared by the events of a chunk that carry the same name.
    pub name: Arc<str>,
    pub value: Option<Bytes>,
}

/// Where an event came from. The origin gives the event's split (the unit of ordering
/// and acknowledgement) and its position inside that split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Kafka record.
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    /// An AMQP delivery. `seq` is the position: numbered by the source from 1, growing
    /// across reconnections (delivery tags restart on every channel, so they cannot be).
    /// A redelivered message gets a new `seq`.
    Amqp {
        queue: Arc<str>,
        seq: i64,
        /// The tag on the channel the message came on; only meaningful on that channel.
        delivery_tag: u64,
        /// The producer's `message_id` property, when set.
        message_id: Option<String>,
        /// The exchange the message was published to; empty for the default exchange.
        exchange: String,
        routing_key: String,
        /// True when the broker delivered this message before (to any consumer).
        redelivered: bool,
    },
    /// A line of a sample file given to `sluice invoke` (1-based line number).
    Sample { line: u64 },
    /// A record of an object in a bucket: the object's identity (key and etag) and the
    /// record's line (1-based; the element index for JSON arrays).
    Object {
        bucket: Arc<str>,
        key: Arc<str>,
        etag: Option<Arc<str>>,
        line: u64,
    },
    /// A dead letter being replayed: its object and 1-based line there. The record's
    /// first origin is kept in the letter itself.
    DeadLetter { object: Arc<str>, line: u64 },
}

impl Origin {
    /// The split this event belongs to: a Kafka topic-partition, an AMQP queue, one
    /// version of an object, a sample file.
    pub fn split(&self) -> SplitId {
        match self {
            // Clones of the origin's names (a reference count), not new strings: this
            // runs several times per event on the data path.
            Origin::Kafka {
                topic, partition, ..
            } => SplitId::Kafka {
                topic: Arc::clone(topic),
                partition: *partition,
            },
            Origin::Amqp { queue, .. } => SplitId::Amqp {
                queue: Arc::clone(queue),
            },
            Origin::Sample { .. } => SplitId::Sample,
            Origin::DeadLetter { object, .. } => SplitId::DeadLetter {
                object: object.clone(),
            },
            Origin::Object {
                bucket, key, etag, ..
            } => SplitId::object(bucket, key, etag.as_deref().unwrap_or("")),
        }
    }

    /// Whether this record belongs to `split`: `self.split() == *split`, without building
    /// a split (reference counts, and for an object three new strings).
    pub fn in_split(&self, split: &SplitId) -> bool {
        match (self, split) {
            (
                Origin::Kafka {
                    topic, partition, ..
                },
                SplitId::Kafka {
                    topic: split_topic,
                    partition: split_partition,
                },
            ) => partition == split_partition && topic == split_topic,
            (Origin::Amqp { queue, .. }, SplitId::Amqp { queue: split_queue }) => {
                queue == split_queue
            }
            (Origin::Sample { .. }, SplitId::Sample) => true,
            (
                Origin::DeadLetter { object, .. },
                SplitId::DeadLetter {
                    object: split_object,
                },
            ) => object == split_object,
            (
                Origin::Object {
                    bucket, key, etag, ..
                },
                SplitId::Object {
                    bucket: split_bucket,
                    key: split_key,
                    etag: split_etag,
                },
            ) => {
                key == split_key
                    && bucket == split_bucket
                    && etag.as_deref().unwrap_or("") == &**split_etag
            }
            _ => false,
        }
    }

    /// [`Origin::split`], reusing `current` when this record belongs to it. Records come
    /// in runs of one split, so a loop over events that keeps its `current` builds one
    /// split per run instead of one per event.
    pub fn split_cached<'a>(&self, current: &'a mut Option<SplitId>) -> &'a SplitId {
        if !current.as_ref().is_some_and(|split| self.in_split(split)) {
            *current = None;
        }
        current.get_or_insert_with(|| self.split())
    }

    /// Whether the source must still be acknowledged for this record when the platform
    /// drops it because a commit marker already covers it (its output was written before
    /// a restart). True for the lines of an object: the bucket source reads an unfinished
    /// object again whole and marks it done only once every line it handed out is
    /// acknowledged, the lines written before the restart included. False for a Kafka
    /// record, whose partition's offset commit covers every earlier offset; the other
    /// kinds cannot be read again, so no commit marker ever covers them.
    pub fn needs_ack_when_skipped(&self) -> bool {
        matches!(self, Origin::Object { .. })
    }

    /// The origin as a JSON object, as shown to functions (envelope input) and in dead
    /// letters: `{"topic", "partition", "offset"}`, `{"queue", "seq", "delivery_tag",
    /// "message_id", "exchange", "routing_key", "redelivered"}` or `{"line"}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => serde_json::json!({ "topic": &**topic, "partition": partition, "offset": offset }),
            Origin::Amqp {
                queue,
                seq,
                delivery_tag,
                message_id,
                exchange,
                routing_key,
                redelivered,
            } => serde_json::json!({
                "queue": &**queue,
                "seq": seq,
                "delivery_tag": delivery_tag,
                "message_id": message_id,
                "exchange": exchange,
                "routing_key": routing_key,
                "redelivered": redelivered,
            }),
            Origin::Sample { line } => serde_json::json!({ "line": line }),
            Origin::Object {
                bucket,
                key,
                etag,
                line,
            } => {
                serde_json::json!({ "bucket": &**bucket, "key": &**key, "etag": etag.as_deref(), "line": line })
            }
            Origin::DeadLetter { object, line } => {
                serde_json::json!({ "dead_letter_object": &**object, "line": line })
            }
        }
    }

    /// The event's position within its split; positions grow within a split.
    pub fn position(&self) -> i64 {
        match self {
            Origin::Kafka { offset, .. } => *offset,
            Origin::Amqp { seq, .. } => *seq,
            Origin::Sample { line }
            | Origin::DeadLetter { line, .. }
            | Origin::Object { line, .. } => *line as i64,
        }
    }

    /// The record's stable identity: the same record always gets the same text (for
    /// AMQP only when the producer set `message_id`; else the source's sequence number).
    /// A dead letter's `id`.
    pub fn identity(&self) -> String {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => format!("kafka:{topic}/{partition}/{offset}"),
            Origin::Amqp {
                queue,
                message_id: Some(message_id),
                ..
            } => format!("amqp:{queue}/{message_id}"),
            Origin::Amqp { queue, seq, .. } => format!("amqp:{queue}/seq-{seq}"),
            Origin::Sample { line } => format!("sample:{line}"),
            Origin::Object {
                bucket,
                key,
                etag,
                line,
            } => format!(
                "object:{bucket}/{key}@{}/{line}",
                etag.as_deref().unwrap_or("")
            ),
            Origin::DeadLetter { object, line } => format!("dead-letter:{object}/{line}"),
        }
    }

    /// The producer-set id of the message, which stays the same across redeliveries and
    /// producer retries (an AMQP `message_id`); `None` when the source has none.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Origin::Amqp { message_id, .. } => message_id.as_deref(),
            Origin::Kafka { .. }
            | Origin::Sample { .. }
            | Origin::Object { .. }
            | Origin::DeadLetter { .. } => None,
        }
    }
}

/// A message from a source, as the platform sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The message value.
    pub payload: Bytes,
    pub key: Option<Bytes>,
    /// In the message's order. A list, not each event's own: consecutive messages with
    /// the same headers share one (see `kafka/chunk.rs`).
    pub headers: Arc<[Header]>,
    /// Milliseconds since the Unix epoch, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    pub origin: Origin,
    /// Set when the source could not read this record (a ragged CSV row, a damaged
    /// compressed object): why. Such a record goes straight to the dead letters with its
    /// origin, never to the function. `payload` holds the bytes that were there.
    pub unreadable: Option<Arc<str>>,
}

impl Event {
    /// An event with only a payload, for tests and sample input.
    pub fn from_payload(payload: impl Into<Bytes>, origin: Origin) -> Self {
        Self {
            payload: payload.into(),
            key: None,
            headers: Arc::default(),
            timestamp_ms: None,
            origin,
            unreadable: None,
        }
    }

    /// Bytes this event counts for against `batch.max_bytes`.
    pub fn size_bytes(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_stable_for_the_same_record() {
        let amqp = |seq, message_id: Option<&str>| Origin::Amqp {
            queue: Arc::from("q"),
            seq,
            delivery_tag: seq as u64,
            message_id: message_id.map(str::to_owned),
            exchange: String::new(),
            routing_key: "q".into(),
            redelivered: false,
        };
        // A redelivery gets a new sequence number but keeps its message_id.
        assert_eq!(
            amqp(1, Some("m-7")).identity(),
            amqp(9, Some("m-7")).identity()
        );
        assert_eq!(amqp(1, Some("m-7")).identity(), "amqp:q/m-7");
        assert_eq!(amqp(3, None).identity(), "amqp:q/seq-3");
    }

    #[test]
    fn only_a_producer_set_id_is_a_message_id() {
        let kafka = Origin::Kafka {
            topic: Arc::from("t"),
            partition: 0,
            offset: 3,
        };
        assert_eq!(kafka.message_id(), None);
        let amqp = Origin::Amqp {
            queue: Arc::from("q"),
            seq: 1,
            delivery_tag: 1,
            message_id: Some("m-1".into()),
            exchange: String::new(),
            routing_key: "q".into(),
            redelivered: false,
        };
        assert_eq!(amqp.message_id(), Some("m-1"));
    }

    #[test]
    fn in_split_agrees_with_comparing_built_splits() {
        let kafka = |topic: &str, partition| Origin::Kafka {
            topic: Arc::from(topic),
            partition,
            offset: 7,
        };
        let object = |key: &str, etag: Option<&str>| Origin::Object {
            bucket: Arc::from("b"),
            key: Arc::from(key),
            etag: etag.map(Arc::from),
            line: 2,
        };
        let origins = [
            kafka("t", 0),
            kafka("t", 1),
            kafka("u", 0),
            Origin::Amqp {
                queue: Arc::from("t"),
                seq: 1,
                delivery_tag: 1,
                message_id: None,
                exchange: String::new(),
                routing_key: "t".into(),
                redelivered: false,
            },
            object("k", None),
            object("k", Some("")),
            object("k", Some("e1")),
            object("j", Some("e1")),
            Origin::Sample { line: 1 },
            Origin::DeadLetter {
                object: Arc::from("t"),
                line: 1,
            },
        ];
        for origin in &origins {
            for other in &origins {
                let split = other.split();
                assert_eq!(
                    origin.in_split(&split),
                    origin.split() == split,
                    "{origin:?} in {split}"
                );
            }
        }
    }

    #[test]
    fn split_cached_builds_a_split_only_when_the_run_changes() {
        let kafka = |partition| Origin::Kafka {
            topic: Arc::from("t"),
            partition,
            offset: 0,
        };
        let mut current = None;
        let first = kafka(0).split_cached(&mut current).clone();
        assert_eq!(first, SplitId::kafka("t", 0));
        let Some(SplitId::Kafka { topic: kept, .. }) = &current else {
            panic!("no split kept: {current:?}");
        };
        let kept = Arc::clone(kept);
        // Same split from another origin value: the kept one is reused, not rebuilt.
        kafka(0).split_cached(&mut current);
        assert!(
            matches!(&current, Some(SplitId::Kafka { topic, .. }) if Arc::ptr_eq(topic, &kept))
        );
        assert_eq!(kafka(1).split_cached(&mut current), &SplitId::kafka("t", 1));
        assert_eq!(current, Some(SplitId::kafka("t", 1)));
    }
}
