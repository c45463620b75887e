//! Neutral splits, for tests of code that must not care which kind of source delivered
//! its events (the platform's pipeline and commit protocol): numbered versions of objects
//! in one in-memory bucket, whose positions can be read again like any replayable split.

use crate::checkpoint::SplitId;
use crate::event::{Event, Origin};

/// The bucket every neutral split is an object of.
pub const BUCKET: &str = "memory://in";

/// Split number `n`.
pub fn split(n: i32) -> SplitId {
    SplitId::object(BUCKET, &key(n), "")
}

/// Position `position` (≥ 0) of split `n`.
pub fn origin(n: i32, position: i64) -> Origin {
    Origin::Object {
        bucket: BUCKET.into(),
        key: key(n).into(),
        etag: None,
        line: u64::try_from(position).unwrap_or(0),
    }
}

/// An event with `payload` at `position` of split `n`.
pub fn event(n: i32, position: i64, payload: impl Into<bytes::Bytes>) -> Event {
    Event::from_payload(payload, origin(n, position))
}

/// Split number `n`'s objects' names start with this (see `SplitId::range_owner`).
pub fn owner(n: i32) -> String {
    split(n).range_owner().unwrap_or_default()
}

fn key(n: i32) -> String {
    format!("split-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_neutral_origin_belongs_to_its_split_at_its_position() {
        let origin = origin(3, 41);
        assert_eq!(origin.split(), split(3));
        assert_eq!(origin.position(), 41);
        assert_ne!(split(3), split(4));
        assert!(
            split(3).range_folder().is_some(),
            "read again like any replayable split"
        );
    }
}
