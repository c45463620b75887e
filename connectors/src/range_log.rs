//! Splits whose positions can be read again: what the platform's exactly-once commit
//! protocol needs from a connector (see `platform/src/commit/design.md`).
//!
//! A source whose splits are replayable — a Kafka partition (offsets), one version of an
//! input object (lines) — gives the platform a [`RangeLog`]. Recovery on start reads
//! every range a crash left unfinished again through it ([`RangeLog::read_range`]), then
//! lets the connector bring its own stored positions up to the committed ranges
//! ([`RangeLog::heal`]). Splits that cannot be read again (AMQP queues, samples, dead
//! letters being replayed) take no part: their [`SplitId::range_folder`] is `None`.
//!
//! The names below ([`SplitId::range_folder`], [`SplitId::range_owner`]) are part of
//! every output already written: markers and objects are found again by them, so they
//! never change.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{PositionRange, SplitId};
use crate::source::{Source, SourceError};

/// Folder of Kafka partitions' range markers, below a job's output prefix.
const PARTITION_RANGES: &str = "_sluice/kafka";
/// Folder of object versions' range markers, below a job's output prefix.
pub const OBJECT_RANGES: &str = "_sluice/objects";

/// The replayable splits of one job's trigger, as recovery sees them.
#[async_trait]
pub trait RangeLog: Send + Sync {
    /// The folder, relative to the job's output prefix, below which every split this log
    /// reads keeps its range markers (one sub-folder per split, see
    /// [`SplitId::range_folder`]).
    fn range_folder(&self) -> String;

    /// A finite source over the events of `split` at positions `range.first..=range.last`,
    /// in position order, with the origins the job's source gave them the first time (so
    /// the output has the same names). Positions missing inside the range (compaction,
    /// retention, an object replaced since) are simply absent. Its `ack` does nothing.
    async fn read_range(
        &self,
        split: &SplitId,
        range: PositionRange,
    ) -> Result<Box<dyn Source>, SourceError>;

    /// After recovery: moves the connector's own stored positions (a consumer group's
    /// offsets) up to `last + 1` of each split's latest committed range where they are
    /// behind; returns the positions moved. The default does nothing: a source whose
    /// positions only advance once output is acknowledged has nothing to heal.
    async fn heal(
        &self,
        latest: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<BTreeMap<SplitId, i64>, SourceError> {
        let _ = latest;
        Ok(BTreeMap::new())
    }
}

impl SplitId {
    /// The folder of this split's range markers, relative to the job's output prefix:
    /// `_sluice/kafka/<topic>/<partition>` or `_sluice/objects/<id>` (see [`object_id`]);
    /// `None` for splits that cannot be read again.
    pub fn range_folder(&self) -> Option<String> {
        match self {
            Self::Kafka { topic, partition } => {
                Some(format!("{}/{partition}", partition_ranges(topic)))
            }
            Self::Object { bucket, key, etag } => {
                Some(format!("{OBJECT_RANGES}/{}", object_id(bucket, key, etag)))
            }
            Self::Amqp { .. } | Self::Sample | Self::DeadLetter { .. } => None,
        }
    }

    /// What the names of a range's output objects start with: `<topic>-<partition>` or
    /// `object-<id>`; `None` for splits that cannot be read again.
    pub fn range_owner(&self) -> Option<String> {
        match self {
            Self::Kafka { topic, partition } => Some(format!("{topic}-{partition}")),
            Self::Object { bucket, key, etag } => {
                Some(format!("object-{}", object_id(bucket, key, etag)))
            }
            Self::Amqp { .. } | Self::Sample | Self::DeadLetter { .. } => None,
        }
    }
}

/// The folder of one Kafka topic's range markers, relative to the job's output prefix.
pub(crate) fn partition_ranges(topic: &str) -> String {
    format!("{PARTITION_RANGES}/{topic}")
}

/// The stable identity of one object version: 16 hexadecimal digits of a 64-bit FNV-1a
/// hash over bucket, key and etag (each followed by a 0 byte, so no two triples share an
/// input). Keys may be long and hold any character; names must stay short and safe in
/// every store. Stable across builds and platforms, unlike `std`'s hasher.
pub fn object_id(bucket: &str, key: &str, etag: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in [bucket, key, etag] {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// How a range's markers record its split, field by field: a Kafka partition's topic and
/// partition, or an object version. These are the fields of every marker written so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitRecord {
    /// Empty for an object version.
    pub topic: String,
    /// 0 for an object version.
    pub partition: i32,
    pub object: Option<ObjectVersion>,
}

/// One version of an input object as a marker records it: the input URL, the key below
/// it, the etag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectVersion {
    pub bucket: String,
    pub key: String,
    pub etag: String,
}

impl SplitRecord {
    /// The record of `split`; `None` for splits that cannot be read again.
    pub fn of(split: &SplitId) -> Option<Self> {
        match split {
            SplitId::Kafka { topic, partition } => Some(Self {
                topic: topic.to_string(),
                partition: *partition,
                object: None,
            }),
            SplitId::Object { bucket, key, etag } => Some(Self {
                topic: String::new(),
                partition: 0,
                object: Some(ObjectVersion {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    etag: etag.to_string(),
                }),
            }),
            SplitId::Amqp { .. } | SplitId::Sample | SplitId::DeadLetter { .. } => None,
        }
    }

    /// The split recorded.
    pub fn split(&self) -> SplitId {
        match &self.object {
            Some(object) => SplitId::object(&object.bucket, &object.key, &object.etag),
            None => SplitId::kafka(&self.topic, self.partition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayable_splits_have_folders_and_owners_and_the_others_none() {
        let partition = SplitId::kafka("clicks.v1", 3);
        assert_eq!(
            partition.range_folder().as_deref(),
            Some("_sluice/kafka/clicks.v1/3")
        );
        assert_eq!(partition.range_owner().as_deref(), Some("clicks.v1-3"));
        let object = SplitId::object("s3://in", "a/b.jsonl", "e1");
        let id = object_id("s3://in", "a/b.jsonl", "e1");
        assert_eq!(object.range_folder(), Some(format!("_sluice/objects/{id}")));
        assert_eq!(object.range_owner(), Some(format!("object-{id}")));
        for split in [
            SplitId::amqp("orders/1"),
            SplitId::Sample,
            SplitId::dead_letter("x"),
        ] {
            assert_eq!(split.range_folder(), None, "{split}");
            assert_eq!(split.range_owner(), None, "{split}");
        }
    }

    #[test]
    fn a_split_record_gives_back_its_split() {
        for split in [
            SplitId::kafka("clicks.v1", 3),
            SplitId::object("s3://in", "a/b.jsonl", ""),
        ] {
            assert_eq!(SplitRecord::of(&split).unwrap().split(), split);
        }
        assert_eq!(SplitRecord::of(&SplitId::amqp("orders/1")), None);
    }

    #[test]
    fn an_object_id_is_stable_and_tells_versions_apart() {
        assert_eq!(object_id("b", "k", "e").len(), 16);
        assert_eq!(object_id("b", "k", "e"), object_id("b", "k", "e"));
        assert_ne!(object_id("b", "k", "e"), object_id("b", "k", "f"));
        assert_ne!(object_id("b", "ke", ""), object_id("b", "k", "e"));
    }
}
