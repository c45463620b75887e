//! Source positions as data.
//!
//! A [`CheckpointDelta`] says, per split, which positions a batch (or a group of batches)
//! covers: the inclusive range `first..=last`. Deltas travel with batches and are merged
//! in order; once every output row derived from a delta is durable, the delta is handed to
//! [`crate::Source::ack`].
//!
//! Invariant: within a split, merged ranges only move forward. A delta whose first
//! position is not after the last position already held for that split is an error —
//! it means positions were replayed or reordered, and acknowledging it could skip data.
//! Positions may have gaps (Kafka compaction, transaction markers), so "after" is strict
//! `>`, not `== last + 1`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The unit of ordering and acknowledgement: a Kafka topic-partition, an AMQP queue, one
/// version of an object, a sample file, a dead-letter object being replayed.
///
/// Its text ([`fmt::Display`]) is what names and logs have always shown, and
/// [`SplitId::parse`] reads it back unambiguously by its kind prefix:
///
/// | kind | text |
/// |---|---|
/// | Kafka | `<topic>/<partition>` (a topic holds no `:`, so no prefix below is one) |
/// | AMQP | `amqp:<queue>` (the queue may hold `/`, `:`, anything) |
/// | object | `object:<bucket>#<key>@<etag>` (the bucket holds no `#`, the etag no `@`) |
/// | sample | `sample` |
/// | dead letter | `dead-letter:<object>` |
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SplitId {
    /// One partition of a Kafka topic; positions are offsets.
    Kafka { topic: Arc<str>, partition: i32 },
    /// One AMQP queue; positions are the consuming source's own sequence numbers.
    Amqp { queue: Arc<str> },
    /// One version of an input object; positions are its lines (or array elements).
    Object {
        bucket: Arc<str>,
        key: Arc<str>,
        /// Empty when the store gave no etag.
        etag: Arc<str>,
    },
    /// The sample file given to `sluice invoke`; positions are its lines.
    Sample,
    /// A dead-letter object being replayed; positions are its lines.
    DeadLetter { object: Arc<str> },
}

impl SplitId {
    /// The split of a Kafka topic-partition.
    pub fn kafka(topic: &str, partition: i32) -> Self {
        Self::Kafka {
            topic: topic.into(),
            partition,
        }
    }

    /// The split of an AMQP queue. A queue is one split.
    pub fn amqp(queue: &str) -> Self {
        Self::Amqp {
            queue: queue.into(),
        }
    }

    /// The split of one version of an object.
    pub fn object(bucket: &str, key: &str, etag: &str) -> Self {
        Self::Object {
            bucket: bucket.into(),
            key: key.into(),
            etag: etag.into(),
        }
    }

    /// The split of a dead-letter object being replayed.
    pub fn dead_letter(object: &str) -> Self {
        Self::DeadLetter {
            object: object.into(),
        }
    }

    /// Reads a split's text (see the type docs) back; `None` when it is none of the
    /// forms, e.g. a Kafka form whose partition is not a number.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(queue) = text.strip_prefix("amqp:") {
            return Some(Self::amqp(queue));
        }
        if let Some(rest) = text.strip_prefix("object:") {
            let (bucket, rest) = rest.split_once('#')?;
            let (key, etag) = rest.rsplit_once('@')?;
            return Some(Self::object(bucket, key, etag));
        }
        if let Some(object) = text.strip_prefix("dead-letter:") {
            return Some(Self::dead_letter(object));
        }
        if text == "sample" {
            return Some(Self::Sample);
        }
        let (topic, partition) = text.rsplit_once('/')?;
        if topic.is_empty() || topic.contains(':') {
            return None;
        }
        Some(Self::kafka(topic, partition.parse().ok()?))
    }
}

impl fmt::Display for SplitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kafka { topic, partition } => write!(f, "{topic}/{partition}"),
            Self::Amqp { queue } => write!(f, "amqp:{queue}"),
            Self::Object { bucket, key, etag } => write!(f, "object:{bucket}#{key}@{etag}"),
            Self::Sample => f.write_str("sample"),
            Self::DeadLetter { object } => write!(f, "dead-letter:{object}"),
        }
    }
}

/// Positions `first..=last` of one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionRange {
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error(
        "checkpoint for split {split} goes backwards: positions {new_first}..={new_last} after {held_last} (internal error; acknowledging could skip data)"
    )]
    Backwards {
        split: SplitId,
        held_last: i64,
        new_first: i64,
        new_last: i64,
    },
}

/// Per split, the range of positions covered. Empty means "nothing to acknowledge".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointDelta {
    ranges: BTreeMap<SplitId, PositionRange>,
}

impl CheckpointDelta {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Adds one position of a split (cloned only when it is new to this delta: this runs
    /// once per event).
    pub fn record(&mut self, split: &SplitId, position: i64) -> Result<(), CheckpointError> {
        self.merge_range(
            split,
            PositionRange {
                first: position,
                last: position,
            },
        )
    }

    /// Appends a later delta to this one; see the module invariant.
    pub fn extend(&mut self, later: CheckpointDelta) -> Result<(), CheckpointError> {
        for (split, range) in &later.ranges {
            self.merge_range(split, *range)?;
        }
        Ok(())
    }

    fn merge_range(
        &mut self,
        split: &SplitId,
        range: PositionRange,
    ) -> Result<(), CheckpointError> {
        match self.ranges.get_mut(split) {
            None => {
                self.ranges.insert(split.clone(), range);
                Ok(())
            }
            Some(held) if range.first > held.last => {
                held.last = range.last;
                Ok(())
            }
            Some(held) => Err(CheckpointError::Backwards {
                split: split.clone(),
                held_last: held.last,
                new_first: range.first,
                new_last: range.last,
            }),
        }
    }

    /// Forgets a split, e.g. after the source lost its assignment.
    pub fn remove(&mut self, split: &SplitId) -> Option<PositionRange> {
        self.ranges.remove(split)
    }

    pub fn get(&self, split: &SplitId) -> Option<PositionRange> {
        self.ranges.get(split).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SplitId, &PositionRange)> {
        self.ranges.iter()
    }
}

impl fmt::Display for CheckpointDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (split, range) in &self.ranges {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{split}:{}..={}", range.first, range.last)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extends_forward_with_gaps() {
        let split = SplitId::kafka("t", 0);
        let mut delta = CheckpointDelta::new();
        delta.record(&split, 3).unwrap();
        delta.record(&split, 4).unwrap();
        let mut later = CheckpointDelta::new();
        later.record(&split, 9).unwrap();
        delta.extend(later).unwrap();
        assert_eq!(delta.get(&split), Some(PositionRange { first: 3, last: 9 }));
        assert_eq!(delta.to_string(), "t/0:3..=9");
    }

    #[test]
    fn refuses_to_go_backwards() {
        let split = SplitId::kafka("t", 1);
        let mut delta = CheckpointDelta::new();
        delta.record(&split, 10).unwrap();
        let err = delta.record(&split, 10).unwrap_err();
        assert!(matches!(
            err,
            CheckpointError::Backwards { held_last: 10, .. }
        ));
        assert!(err.to_string().contains("t/1"));
    }

    /// Text of a split, parsed back, is the same split.
    fn round_trips(split: SplitId) {
        let text = split.to_string();
        assert_eq!(SplitId::parse(&text), Some(split), "{text}");
    }

    #[test]
    fn split_text_is_what_it_always_was() {
        assert_eq!(SplitId::kafka("a/b", 7).to_string(), "a/b/7");
        assert_eq!(SplitId::amqp("orders/eu").to_string(), "amqp:orders/eu");
        assert_eq!(
            SplitId::object("s3://in/x", "k/1", "e1").to_string(),
            "object:s3://in/x#k/1@e1"
        );
        assert_eq!(SplitId::Sample.to_string(), "sample");
        assert_eq!(
            SplitId::dead_letter("dl/dead-1.ndjson").to_string(),
            "dead-letter:dl/dead-1.ndjson"
        );
    }

    #[test]
    fn a_queue_named_like_a_partition_stays_a_queue() {
        for queue in ["orders/1", "a/b/7", "x:y/2", "q@1#2", ""] {
            assert_eq!(
                SplitId::parse(&format!("amqp:{queue}")),
                Some(SplitId::amqp(queue))
            );
            round_trips(SplitId::amqp(queue));
        }
    }

    #[test]
    fn object_keys_with_awkward_characters_round_trip() {
        for key in ["a#b@c/d e+1.csv", "logs/2024/7", "x@y", "#", "@", "k/1@e"] {
            round_trips(SplitId::object("s3://in/x", key, "e1"));
            round_trips(SplitId::object("file:///in", key, ""));
        }
    }

    #[test]
    fn kafka_split_ids_round_trip() {
        round_trips(SplitId::kafka("clicks.v1", 3));
        round_trips(SplitId::kafka("a/b", 7));
        round_trips(SplitId::Sample);
        round_trips(SplitId::dead_letter("amqp:q/1"));
        assert_eq!(SplitId::parse("t/x"), None);
        assert_eq!(SplitId::parse("t"), None);
        assert_eq!(SplitId::parse("/1"), None);
        assert_eq!(SplitId::parse("other:t/1"), None);
    }
}
