//! The bucket source over a local folder (`LocalFileSystem`), with its cursor in another.

use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::*;
use crate::checkpoint::CheckpointDelta;
use crate::event::{Event, Origin};
use crate::source::Source;

struct Folders {
    _dir: tempfile::TempDir,
    inbox: std::path::PathBuf,
    state: std::path::PathBuf,
}

fn folders() -> Folders {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    Folders {
        _dir: dir,
        inbox,
        state,
    }
}

fn config(folders: &Folders, stop_when_idle: bool) -> BucketSourceConfig {
    BucketSourceConfig {
        job: "test".into(),
        input_store: Arc::new(LocalFileSystem::new_with_prefix(&folders.inbox).unwrap()),
        input_prefix: Path::from(""),
        input_url: format!("file://{}", folders.inbox.display()),
        cursor_store: Arc::new(LocalFileSystem::new_with_prefix(&folders.state).unwrap()),
        cursor_path: Path::from("_sluice/bucket/cursor.json"),
        format: InputFormat::Auto,
        compression: InputCompression::Auto,
        poll_interval: Duration::from_millis(20),
        stop_when_idle,
    }
}

/// Everything the source hands over until it reports itself idle.
async fn drain(source: &mut BucketSource) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), source.next_events())
        .await
        .expect("bounded")
        .unwrap()
    {
        events.extend(chunk);
    }
    events
}

fn delta_of(events: &[Event]) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    for event in events {
        delta
            .record(event.origin.split(), event.origin.position())
            .unwrap();
    }
    delta
}

fn key_of(event: &Event) -> String {
    match &event.origin {
        Origin::Object { key, .. } => key.to_string(),
        other => panic!("unexpected origin {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_format_and_names_each_record_origin() {
    let folders = folders();
    std::fs::write(folders.inbox.join("a.ndjson"), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    std::fs::write(folders.inbox.join("b.csv"), "n,name\n3,c\n").unwrap();
    std::fs::create_dir_all(folders.inbox.join("_sluice")).unwrap();
    std::fs::write(folders.inbox.join("_sluice/ignored.ndjson"), "{}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = drain(&mut source).await;

    let payloads: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        vec![r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":"3","name":"c"}"#]
    );
    assert_eq!(key_of(&events[0]), "a.ndjson");
    assert_eq!(events[1].origin.position(), 2);
    assert_eq!(key_of(&events[2]), "b.csv");
    assert_eq!(events[2].origin.position(), 2, "csv line of the row");
    assert_eq!(source.backlog(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_reprocesses_nor_skips() {
    let folders = folders();
    std::fs::write(folders.inbox.join("1.ndjson"), "{\"n\":1}\n").unwrap();
    std::fs::write(folders.inbox.join("2.ndjson"), "{\"n\":2}\n{\"n\":3}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = drain(&mut source).await;
    assert_eq!(events.len(), 3);
    // Only the first object's output became durable before the "crash".
    source.ack(&delta_of(&events[..1])).await.unwrap();
    // Half of the second object acknowledged: not done.
    source.ack(&delta_of(&events[1..2])).await.unwrap();
    drop(source);

    std::fs::write(folders.inbox.join("3.ndjson"), "{\"n\":4}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = drain(&mut source).await;
    let keys: Vec<String> = events.iter().map(key_of).collect();
    assert_eq!(keys, vec!["2.ndjson", "2.ndjson", "3.ndjson"]);
    source.ack(&delta_of(&events)).await.unwrap();
    drop(source);

    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    assert!(drain(&mut source).await.is_empty(), "everything is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_object_is_reported_and_the_others_go_on() {
    let folders = folders();
    std::fs::write(folders.inbox.join("a.csv"), "id,name\n1,x\n2\n3,z\n").unwrap();
    std::fs::write(folders.inbox.join("b.ndjson"), "{\"ok\":true}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = drain(&mut source).await;
    let keys: Vec<String> = events.iter().map(key_of).collect();
    assert_eq!(
        keys,
        vec!["a.csv", "b.ndjson"],
        "row before the ragged one is processed"
    );
    source.ack(&delta_of(&events)).await.unwrap();
    drop(source);

    // The broken object was never acknowledged: it is read again after a restart.
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let keys: Vec<String> = drain(&mut source).await.iter().map(key_of).collect();
    assert_eq!(keys, vec!["a.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_objects_are_found_by_polling() {
    let folders = folders();
    let mut source = BucketSource::connect(config(&folders, false))
        .await
        .unwrap();
    let inbox = folders.inbox.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(inbox.join("late.ndjson"), "{\"late\":1}\n").unwrap();
    });
    let events = tokio::time::timeout(Duration::from_secs(10), source.next_events())
        .await
        .expect("found within the bound")
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(key_of(&events[0]), "late.ndjson");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_of_a_done_object_is_read_again() {
    let folders = folders();
    std::fs::write(folders.inbox.join("a.ndjson"), "{\"v\":1}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = drain(&mut source).await;
    source.ack(&delta_of(&events)).await.unwrap();
    drop(source);
    // Rewriting changes the local store's etag (size and modification time).
    std::fs::write(folders.inbox.join("a.ndjson"), "{\"v\":2}\n{\"v\":2}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    assert_eq!(drain(&mut source).await.len(), 2);
}
