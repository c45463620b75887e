//! The platform selects over `next_events` and drops the future whenever a timer or a
//! finished batch wins, possibly in the middle of a spool or cursor write. Nothing the
//! source decided may be lost with it.

use std::collections::HashSet;
use std::sync::Mutex;

use super::*;
use crate::faulty_store::{Fault, Faults, FaultyStore, Request};

/// The first delete of each path never answers (a request lost on the way); later
/// deletes of it go through.
#[derive(Debug, Default)]
struct FirstDeleteHangs {
    tried: Mutex<HashSet<Path>>,
}

impl Faults for FirstDeleteHangs {
    fn before(&self, request: Request, location: &Path) -> Fault {
        if request == Request::Delete && self.tried.lock().unwrap().insert(location.clone()) {
            Fault::Hang
        } else {
            Fault::Pass
        }
    }
}

fn hanging_config(folders: &Folders) -> BucketSourceConfig {
    let state = Arc::new(FaultyStore::new(
        Arc::new(LocalFileSystem::new_with_prefix(&folders.state).unwrap()),
        FirstDeleteHangs::default(),
    ));
    notification_config_with_spool_in(folders, state)
}

/// Polls `next_events` the way the platform's select does: dropped after a short while.
async fn poll_briefly(source: &mut BucketSource) -> Option<Vec<Event>> {
    next_within(source, Duration::from_millis(100)).await
}

/// Polls (reading nothing) until the spool is empty, for at most 50 polls.
async fn poll_until_the_spool_is_empty(source: &mut BucketSource, folders: &Folders, what: &str) {
    for _ in 0..50 {
        assert!(
            poll_briefly(source).await.is_none(),
            "{what}: nothing is read"
        );
        if spooled(folders).await == 0 {
            return;
        }
    }
    panic!("{what}: still spooled: {}", spooled(folders).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_future_loses_neither_a_done_object_nor_a_repeat() {
    let folders = folders();
    for name in ["a.ndjson", "b.ndjson", "c.ndjson"] {
        std::fs::write(folders.inbox.join(name), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    }
    let mut source = BucketSource::connect(hanging_config(&folders))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    for name in ["a.ndjson", "b.ndjson", "c.ndjson"] {
        assert_eq!(post(address, &aws_body(name, name)).await, 200);
    }

    // Objects read to their end before their acknowledgement (a and b, the usual order)
    // and one acknowledged before its end was seen (c): the acknowledgement takes their
    // notices out of the spool. The first delete of each entry hangs and is dropped with
    // the future; a later poll deletes it again.
    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(poll_briefly(&mut source).await.unwrap_or_default());
        if events.len() == 6 {
            break;
        }
    }
    assert_eq!(events.len(), 6, "every record once");
    let _ = tokio::time::timeout(Duration::from_millis(100), source.ack(&delta_of(&events))).await;
    poll_until_the_spool_is_empty(&mut source, &folders, "done objects").await;

    // Repeats are put in the spool by the endpoint and dropped by the source; a drop
    // whose delete hangs is finished by a later poll.
    for name in ["a.ndjson", "b.ndjson", "c.ndjson"] {
        assert_eq!(post(address, &aws_body(name, name)).await, 200);
    }
    poll_until_the_spool_is_empty(&mut source, &folders, "repeats").await;
    drop(source);
    let mut source = BucketSource::connect(notification_config(&folders))
        .await
        .unwrap();
    assert!(next(&mut source).await.is_none(), "nothing read again");
}
