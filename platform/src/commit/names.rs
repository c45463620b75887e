//! Deterministic names of everything the commit protocol writes for a Kafka range.
//!
//! A range is `first..=last` of one topic-partition. Its Parquet objects, its dead-letter
//! object and its markers are all named from (topic, partition, first, last), so writing
//! the same range again (a redo after a crash) produces the same names and overwrites
//! instead of duplicating. Offsets are zero-padded to 20 digits so names sort by offset.

use sluice_connectors::{PositionRange, SplitId};

/// Folder of the markers, below the output prefix.
pub const MARKER_ROOT: &str = "_sluice/kafka";

/// `<topic>-<partition>-<first:020>-<last:020>`: the stem of a range's output objects;
/// `None` for splits that are not Kafka partitions.
pub fn range_stem(split: &SplitId, range: PositionRange) -> Option<String> {
    let (topic, partition) = split.as_kafka()?;
    Some(format!(
        "{topic}-{partition}-{:020}-{:020}",
        range.first, range.last
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
    fn suffix(self) -> &'static str {
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
    Some((partition, range, kind))
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
        assert_eq!(range_stem(&SplitId::new("sample"), range), None);
    }
}
