//! Object versions in the commit protocol: names from the object's identity and the line
//! range, markers under `_sluice/objects/`, committed lines recognised after a restart,
//! an unfinished object range refused until recovery.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use sluice_connectors::{CheckpointDelta, Event, Origin, PositionRange, SplitId};

use super::super::names::{object_id, range_stem};
use super::super::{CommitError, Committer};
use crate::output::store::OutputLocation;

const BUCKET: &str = "s3://landing/in";
const KEY: &str = "día 1 + más.ndjson";

fn location(store: &Arc<InMemory>, prefix: &str) -> OutputLocation {
    OutputLocation {
        store: store.clone(),
        prefix: Path::from(prefix),
        url: format!("memory://{prefix}"),
    }
}

fn line(n: u64) -> Event {
    Event::from_payload(
        "{}",
        Origin::Object {
            bucket: Arc::from(BUCKET),
            key: Arc::from(KEY),
            etag: Some(Arc::from("e1")),
            line: n,
        },
    )
}

fn pending(first: i64, last: i64) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    delta.record(split(), first).unwrap();
    delta.record(split(), last).unwrap();
    delta
}

fn split() -> SplitId {
    line(1).origin.split()
}

async fn markers(store: &Arc<InMemory>) -> Vec<String> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStore as _;
    let mut found: Vec<String> = store
        .list(Some(&Path::from("out/_sluice")))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    found.sort();
    found
}

#[tokio::test]
async fn object_ranges_are_named_from_the_version_and_committed_lines_are_recognised() {
    let store = Arc::new(InMemory::new());
    let (output, dead) = (location(&store, "out"), location(&store, "dead"));
    let mut committer = Committer::load(output.clone(), dead.clone(), None)
        .await
        .unwrap();
    let ranges = committer.ranges(&pending(1, 100));
    let range = PositionRange {
        first: 1,
        last: 100,
    };
    assert_eq!(ranges, BTreeMap::from([(split(), range)]));
    let id = object_id(BUCKET, KEY, "e1");
    let stem = range_stem(&split(), range).unwrap();
    assert_eq!(stem, format!("object-{id}-{:020}-{:020}", 1, 100));
    let objects = BTreeMap::from([(split(), vec![format!("out/{stem}.parquet")])]);
    let staged = committer
        .stage(&ranges, &objects, &BTreeMap::new())
        .await
        .unwrap();
    let intent = format!("out/_sluice/objects/{id}/{:020}-{:020}.intent.json", 1, 100);
    assert_eq!(markers(&store).await, std::slice::from_ref(&intent));
    staged.commit(&mut committer).await.unwrap();
    assert_eq!(
        markers(&store).await,
        [intent.replace("intent", "commit"), intent.clone()]
    );
    assert!(committer.already_committed(&line(100)));
    assert!(!committer.already_committed(&line(101)));

    // After a restart: the committed range is known, and an object read again from its
    // first line names only the lines after it.
    let committer = Committer::load(output.clone(), dead.clone(), None)
        .await
        .unwrap();
    assert!(committer.already_committed(&line(1)));
    assert!(!committer.already_committed(&line(101)));
    assert_eq!(
        committer.ranges(&pending(1, 150)),
        BTreeMap::from([(
            split(),
            PositionRange {
                first: 101,
                last: 150
            }
        )])
    );
    assert!(
        committer.ranges(&pending(1, 100)).is_empty(),
        "only skipped lines: nothing to name"
    );
    // Another version of the same key is another object.
    let other = SplitId::object(BUCKET, KEY, "e2");
    let mut delta = CheckpointDelta::new();
    delta.record(other.clone(), 1).unwrap();
    assert_eq!(
        committer.ranges(&delta),
        BTreeMap::from([(other, PositionRange { first: 1, last: 1 })])
    );
}

#[tokio::test]
async fn an_unfinished_object_range_must_be_recovered_first() {
    let store = Arc::new(InMemory::new());
    let (output, dead) = (location(&store, "out"), location(&store, "dead"));
    let committer = Committer::load(output.clone(), dead.clone(), None)
        .await
        .unwrap();
    let ranges = committer.ranges(&pending(1, 40));
    // The intent is durable, then the platform dies before the commit marker.
    let _staged = committer
        .stage(&ranges, &BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let error = Committer::load(output, dead, None).await.unwrap_err();
    assert!(
        matches!(&error, CommitError::UnfinishedObject { first: 1, last: 40, object, .. } if object.contains(KEY)),
        "{error}"
    );
}
