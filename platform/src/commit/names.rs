//! Deterministic names of everything the commit protocol writes for a range.
//!
//! A range is `first..=last` of one split whose positions can be read again (see
//! `sluice_connectors::range_log`). Its Parquet objects, its dead-letter object and its
//! markers are all named from the split and (first, last), so writing the same range
//! again (a redo after a crash) produces the same names and overwrites instead of
//! duplicating. Positions are zero-padded to 20 digits so names sort by position.
//!
//! What a split contributes — the folder of its markers and what its objects' names start
//! with — is the connector's ([`SplitId::range_folder`], [`SplitId::range_owner`]), so this
//! file never looks at the kind of a split: an object version's markers are under
//! `_sluice/objects/<id>/`, its output objects `object-<id>-<first>-<last>.parquet`, with
//! `<id>` from [`object_id`].

use sluice_connectors::{PositionRange, SplitId};

pub use sluice_connectors::range_log::object_id;

/// The stem of a range's output objects: `<owner>-<first:020>-<last:020>`; `None` for
/// splits that take no part in the protocol (AMQP queues, samples).
pub fn range_stem(split: &SplitId, range: PositionRange) -> Option<String> {
    let owner = split.range_owner()?;
    Some(format!("{owner}-{:020}-{:020}", range.first, range.last))
}

/// `<folder>/<first:020>-<last:020>.<kind>.json` for a split's range, relative to the
/// output prefix.
pub fn split_marker_name(
    split: &SplitId,
    range: PositionRange,
    kind: MarkerKind,
) -> Option<String> {
    Some(format!(
        "{}/{}",
        split.range_folder()?,
        marker_file(range, kind)
    ))
}

/// `<first:020>-<last:020>.<kind>.json`, a marker's file name.
pub fn marker_file(range: PositionRange, kind: MarkerKind) -> String {
    format!("{:020}-{:020}.{}", range.first, range.last, kind.suffix())
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
    fn names_round_trip_and_sort_by_position() {
        let range = PositionRange {
            first: 7,
            last: 1234,
        };
        let split = SplitId::object("s3://in", "k", "e1");
        let id = object_id("s3://in", "k", "e1");
        let name = split_marker_name(&split, range, MarkerKind::Commit).unwrap();
        assert_eq!(
            name,
            format!("_sluice/objects/{id}/00000000000000000007-00000000000000001234.commit.json")
        );
        let file = name.rsplit('/').next().unwrap();
        assert_eq!(parse_marker_file(file), Some((range, MarkerKind::Commit)));
        assert_eq!(parse_marker_file("7-1234.commit.json"), None);
        assert_eq!(parse_marker_file("readme.txt"), None);
        assert_eq!(
            range_stem(&split, range).unwrap(),
            format!("object-{id}-00000000000000000007-00000000000000001234")
        );
        assert_eq!(range_stem(&SplitId::Sample, range), None);
        assert_eq!(range_stem(&SplitId::amqp("q"), range), None);
        // A queue named like a partition of a topic is still a queue: no range names.
        assert_eq!(range_stem(&SplitId::amqp("orders/1"), range), None);
        assert_eq!(
            split_marker_name(&SplitId::amqp("a/b/7"), range, MarkerKind::Intent),
            None
        );
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
    }
}
