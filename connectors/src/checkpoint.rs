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

/// The unit of ordering and acknowledgement: a Kafka topic-partition, a queue, an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SplitId(Arc<str>);

impl SplitId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The split id of a Kafka topic-partition: `topic/partition`.
    pub fn kafka(topic: &str, partition: i32) -> Self {
        Self(format!("{topic}/{partition}").into())
    }

    /// The split id of an AMQP queue: `amqp:queue`. A queue is one split: its positions
    /// are the consuming source's own sequence numbers.
    pub fn amqp(queue: &str) -> Self {
        Self(format!("amqp:{queue}").into())
    }

    /// The split id of one version of an object: `object:<bucket>#<key>@<etag>`. The
    /// bucket is the input URL (which holds no `#`), the etag holds no `@`, so
    /// [`SplitId::as_object`] takes it apart again whatever the key holds.
    pub fn object(bucket: &str, key: &str, etag: &str) -> Self {
        Self(format!("object:{bucket}#{key}@{etag}").into())
    }

    /// The bucket, key and etag of an object split id.
    pub fn as_object(&self) -> Option<(&str, &str, &str)> {
        let rest = self.0.strip_prefix("object:")?;
        let (bucket, rest) = rest.split_once('#')?;
        let (key, etag) = rest.rsplit_once('@')?;
        Some((bucket, key, etag))
    }

    /// The queue of an AMQP split id.
    pub fn as_amqp(&self) -> Option<&str> {
        self.0.strip_prefix("amqp:")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a Kafka split id back into topic and partition.
    pub fn as_kafka(&self) -> Option<(&str, i32)> {
        let (topic, partition) = self.0.rsplit_once('/')?;
        Some((topic, partition.parse().ok()?))
    }
}

impl fmt::Display for SplitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

    /// Adds one position of a split.
    pub fn record(&mut self, split: SplitId, position: i64) -> Result<(), CheckpointError> {
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
        for (split, range) in later.ranges {
            self.merge_range(split, range)?;
        }
        Ok(())
    }

    fn merge_range(&mut self, split: SplitId, range: PositionRange) -> Result<(), CheckpointError> {
        match self.ranges.get_mut(&split) {
            None => {
                self.ranges.insert(split, range);
                Ok(())
            }
            Some(held) if range.first > held.last => {
                held.last = range.last;
                Ok(())
            }
            Some(held) => Err(CheckpointError::Backwards {
                split,
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
        delta.record(split.clone(), 3).unwrap();
        delta.record(split.clone(), 4).unwrap();
        let mut later = CheckpointDelta::new();
        later.record(split.clone(), 9).unwrap();
        delta.extend(later).unwrap();
        assert_eq!(delta.get(&split), Some(PositionRange { first: 3, last: 9 }));
        assert_eq!(delta.to_string(), "t/0:3..=9");
    }

    #[test]
    fn refuses_to_go_backwards() {
        let split = SplitId::kafka("t", 1);
        let mut delta = CheckpointDelta::new();
        delta.record(split.clone(), 10).unwrap();
        let err = delta.record(split.clone(), 10).unwrap_err();
        assert!(matches!(
            err,
            CheckpointError::Backwards { held_last: 10, .. }
        ));
        assert!(err.to_string().contains("t/1"));
    }

    #[test]
    fn kafka_split_ids_round_trip() {
        let split = SplitId::kafka("a/b", 7);
        assert_eq!(split.as_kafka(), Some(("a/b", 7)));
        assert_eq!(SplitId::new("sample").as_kafka(), None);
    }

    #[test]
    fn object_split_ids_round_trip() {
        let split = SplitId::object("s3://in/x", "a#b@c/d e+1.csv", "e1");
        assert_eq!(
            split.as_object(),
            Some(("s3://in/x", "a#b@c/d e+1.csv", "e1"))
        );
        assert_eq!(
            SplitId::object("file:///in", "k", "").as_object(),
            Some(("file:///in", "k", ""))
        );
        assert_eq!(split.as_kafka(), None);
        assert_eq!(SplitId::kafka("t", 1).as_object(), None);
    }

    #[test]
    fn amqp_split_ids_round_trip() {
        let split = SplitId::amqp("orders/eu");
        assert_eq!(split.as_str(), "amqp:orders/eu");
        assert_eq!(split.as_amqp(), Some("orders/eu"));
        assert_eq!(SplitId::kafka("t", 0).as_amqp(), None);
    }
}
