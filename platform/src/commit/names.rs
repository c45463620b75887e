//! Deterministic names of everything the commit protocol writes for a range.
//!
//! A range is `first..=last` of one split: offsets of a Kafka topic-partition, or lines
//! of one version of an input object. Its Parquet objects, its dead-letter object and its
//! markers are all named from the split and (first, last), so writing the same range
//! again (a redo after a crash) produces the same names and overwrites instead of
//! duplicating. Positions are zero-padded to 20 digits so names sort by position.
//!
//! An object version is named by [`object_id`], a stable 64-bit FNV-1a hash of (bucket,
//! key, etag) in hexadecimal: keys may be long and hold any character, and names must
//! stay short and safe in every store. Its markers are under
//! `_sluice/objects/<id>/`, its output objects `object-<id>-<first>-<last>.parquet`.

use sluice_connectors::{PositionRange, SplitId};

/// Folder of the markers, below the output prefix.
pub const MARKER_ROOT: &str = "_sluice/kafka";
/// Folder of the object versions' markers, below the output prefix.
pub const OBJECT_MARKER_ROOT: &str = "_sluice/objects";

/// The stem of a range's output objects: `<topic>-<partition>-<first:020>-<last:020>`,
/// or `object-<id>-<first:020>-<last:020>`; `None` for splits that take no part in the
/// protocol (AMQP queues, samples).
pub fn range_stem(split: &SplitId, range: PositionRange) -> Option<String> {
    let owner = match split {
        SplitId::Kafka { topic, partition } => format!("{topic}-{partition}"),
        SplitId::Object { bucket, key, etag } => format!("object-{}", object_id(bucket, key, etag)),
        SplitId::Amqp { .. } | SplitId::Sample | SplitId::DeadLetter { .. } => return None,
    };
    Some(format!("{owner}-{:020}-{:020}", range.first, range.last))
}

/// The stable identity of one object version: 16 hexadecimal digits of a 64-bit FNV-1a
/// hash over bucket, key and etag (each followed by a 0 byte, so no two triples share an
/// input). Stable across builds and platforms, unlike `std`'s hasher.
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

/// The folder of a split's markers, relative to the output prefix:
/// `_sluice/kafka/<topic>/<partition>` or `_sluice/objects/<id>`.
pub fn split_folder(split: &SplitId) -> Option<String> {
    match split {
        SplitId::Kafka { topic, partition } => Some(format!("{}/{partition}", topic_folder(topic))),
        SplitId::Object { bucket, key, etag } => Some(format!(
            "{OBJECT_MARKER_ROOT}/{}",
            object_id(bucket, key, etag)
        )),
        SplitId::Amqp { .. } | SplitId::Sample | SplitId::DeadLetter { .. } => None,
    }
}

/// `<folder>/<first:020>-<last:020>.<kind>.json` for a split's range, relative to the
/// output prefix.
pub fn split_marker_name(
    split: &SplitId,
    range: PositionRange,
    kind: MarkerKind,
) -> Option<String> {
    Some(format!(
        "{}/{:020}-{:020}.{}",
        split_folder(split)?,
        range.first,
        range.last,
        kind.suffix()
    ))
}

/// The kinds of marker a range can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MarkerKind {
    /// Written (create-only) before the range's objects are uploaded.
    Intent,
    /// Written (create-only) once every object of the range is durable.
    Commit,
    /// Written by a redo before it uploads: every object any attempt may have written.
    Redo,
}

impl MarkerKind {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            MarkerKind::Intent => "intent.json",
            MarkerKind::Commit => "commit.json",
            MarkerKind::Redo => "redo.json",
        }
    }
}

/// Folder of one topic's markers, relative to the output prefix.
pub fn topic_folder(topic: &str) -> String {
    format!("{MARKER_ROOT}/{topic}")
}

/// `_sluice/kafka/<topic>/<partition>/<first:020>-<last:020>.<kind>.json`, relative to
/// the output prefix.
pub fn marker_name(topic: &str, partition: i32, range: PositionRange, kind: MarkerKind) -> String {
    format!(
        "{}/{partition}/{:020}-{:020}.{}",
        topic_folder(topic),
        range.first,
        range.last,
        kind.suffix()
    )
}

/// Parses `<partition>/<first:020>-<last:020>.<kind>.json` (a marker's path below its
/// topic folder); `None` for anything else.
pub fn parse_marker_name(tail: &str) -> Option<(i32, PositionRange, MarkerKind)> {
    let (partition, file) = tail.split_once('/')?;
    let partition: i32 = partition.parse().ok()?;
    let (range, kind) = parse_marker_file(file)?;
    Some((partition, range, kind))
}

/// Parses `<first:020>-<last:020>.<kind>.json`, a marker's file name.
pub fn parse_marker_file(file: &str) -> Option<(PositionRange, MarkerKind)> {
    let (range, suffix) = file.split_once('.')?;
    let kind = [MarkerKind::Intent, MarkerKind::Commit, MarkerKind::Redo]
        .into_iter()
        .find(|kind| kind.suffix() == suffix)?;
    let (first, last) = range.split_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    let range = PositionRange {
        first: first.parse().ok()?,
        last: last.parse().ok()?,
    };
    Some((range, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_offset() {
        let range = PositionRange {
            first: 7,
            last: 1234,
        };
        let name = marker_name("clicks.v1", 3, range, MarkerKind::Commit);
        assert_eq!(
            name,
            "_sluice/kafka/clicks.v1/3/00000000000000000007-00000000000000001234.commit.json"
        );
        let tail = name.strip_prefix("_sluice/kafka/clicks.v1/").unwrap();
        assert_eq!(
            parse_marker_name(tail),
            Some((3, range, MarkerKind::Commit))
        );
        assert_eq!(parse_marker_name("3/7-1234.commit.json"), None);
        assert_eq!(parse_marker_name("x/readme.txt"), None);
        assert_eq!(
            range_stem(&SplitId::kafka("clicks.v1", 3), range).unwrap(),
            "clicks.v1-3-00000000000000000007-00000000000000001234"
        );
        assert_eq!(range_stem(&SplitId::Sample, range), None);
        assert_eq!(range_stem(&SplitId::amqp("q"), range), None);
        // A queue named like a topic-partition is still a queue: no range names.
        assert_eq!(range_stem(&SplitId::amqp("orders/1"), range), None);
        assert_eq!(split_folder(&SplitId::amqp("a/b/7")), None);
    }

    #[test]
    fn object_versions_have_short_stable_names() {
        let range = PositionRange {
            first: 1,
            last: 500,
        };
        let split = SplitId::object("s3://in/landing", "día 1 + más.ndjson", "e1");
        let id = object_id("s3://in/landing", "día 1 + más.ndjson", "e1");
        assert_eq!(id.len(), 16);
        // Fixed forever: output written by one build is recognised by the next.
        assert_eq!(object_id("s3://in/x", "k", "e1"), "70d5bcfa57d081a2");
        assert_ne!(id, object_id("s3://in/landing", "día 1 + más.ndjson", "e2"));
        assert_ne!(object_id("a", "bc", ""), object_id("ab", "c", ""));
        assert_eq!(
            range_stem(&split, range).unwrap(),
            format!("object-{id}-00000000000000000001-00000000000000000500")
        );
        let marker = split_marker_name(&split, range, MarkerKind::Intent).unwrap();
        assert_eq!(
            marker,
            format!("_sluice/objects/{id}/00000000000000000001-00000000000000000500.intent.json")
        );
        let file = marker.rsplit('/').next().unwrap();
        assert_eq!(parse_marker_file(file), Some((range, MarkerKind::Intent)));
        assert_eq!(
            split_marker_name(&SplitId::kafka("t", 2), range, MarkerKind::Commit).unwrap(),
            marker_name("t", 2, range, MarkerKind::Commit)
        );
    }
}
