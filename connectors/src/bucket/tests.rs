//! The bucket source over a local folder (`LocalFileSystem`), with its cursor in another.

use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::*;
use crate::testing::{delta_of, drain};

mod conformance;
mod dropped_futures;
mod webhook_guard;
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
        discovery: Discovery::Listing {
            poll_interval: Duration::from_millis(20),
        },
        stop_when_idle,
        missing_timeout: Duration::from_secs(300),
    }
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
async fn a_ragged_row_is_an_unreadable_record_and_the_rest_goes_on() {
    let folders = folders();
    std::fs::write(folders.inbox.join("a.csv"), "id,name\n1,x\n2\n3,z\n").unwrap();
    std::fs::write(folders.inbox.join("b.ndjson"), "{\"ok\":true}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = drain(&mut source).await;
    let seen: Vec<(String, i64, bool)> = events
        .iter()
        .map(|e| (key_of(e), e.origin.position(), e.unreadable.is_some()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a.csv".into(), 2, false),
            ("a.csv".into(), 3, true),
            ("a.csv".into(), 4, false),
            ("b.ndjson".into(), 1, false),
        ],
        "the rows around the ragged one are processed"
    );
    assert_eq!(&events[1].payload[..], b"2", "the row as it was");
    source.ack(&delta_of(&events)).await.unwrap();
    drop(source);

    // Everything was acknowledged (the ragged row as a dead letter): nothing is read again.
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    assert!(drain(&mut source).await.is_empty());
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

// ---------------------------------------------------------------------------------------
// Notification mode

use super::feed::NotificationFeed;
use super::notification::NoticeFilter;
use super::spool::NoticeSpool;

fn notification_config(folders: &Folders) -> BucketSourceConfig {
    let state = Arc::new(LocalFileSystem::new_with_prefix(&folders.state).unwrap());
    notification_config_with_spool_in(folders, state)
}

/// Notifications on a webhook, spooled in `state`.
fn notification_config_with_spool_in(
    folders: &Folders,
    state: Arc<dyn object_store::ObjectStore>,
) -> BucketSourceConfig {
    BucketSourceConfig {
        discovery: Discovery::Notifications {
            feed: Box::new(NotificationFeed::Webhook {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: None,
            }),
            filter: NoticeFilter::default(),
            spool: NoticeSpool::new(state, Path::from("_sluice/bucket/notices")),
        },
        ..config(folders, false)
    }
}

/// POSTs `body` to the endpoint; returns the status code.
async fn post(address: std::net::SocketAddr, body: &str) -> u16 {
    post_to(address, "/notify", "", body).await
}

/// POSTs `body` to `path` with extra header lines (each ending in `\r\n`).
async fn post_to(address: std::net::SocketAddr, path: &str, headers: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: sluice\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}

fn aws_body(key: &str, etag: &str) -> String {
    let encoded = key.replace(' ', "+");
    format!(
        r#"{{"Records":[{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"landing"}},"object":{{"key":"{encoded}","size":10,"eTag":"{etag}","sequencer":"01"}}}}}}]}}"#
    )
}

fn minio_body(key: &str, etag: &str) -> String {
    let encoded = key.replace(' ', "+");
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"landing/{encoded}","Records":[{{"eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"landing"}},"object":{{"key":"{encoded}","size":10,"eTag":"{etag}","sequencer":"02"}}}}}}]}}"#
    )
}

async fn spooled(folders: &Folders) -> usize {
    let state: Arc<dyn object_store::ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(&folders.state).unwrap());
    NoticeSpool::new(state, Path::from("_sluice/bucket/notices"))
        .list()
        .await
        .unwrap()
        .len()
}

async fn next(source: &mut BucketSource) -> Option<Vec<Event>> {
    next_within(source, Duration::from_millis(700)).await
}

/// The next events, or `None` when the future is dropped after `wait` (as the platform's
/// select drops it when a timer wins).
async fn next_within(source: &mut BucketSource, wait: Duration) -> Option<Vec<Event>> {
    tokio::time::timeout(wait, source.next_events())
        .await
        .ok()
        .map(|r| r.unwrap().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notified_objects_are_processed_once_whatever_the_server_shape() {
    let folders = folders();
    std::fs::write(
        folders.inbox.join("day one.ndjson"),
        "{\"n\":1}\n{\"n\":2}\n",
    )
    .unwrap();
    std::fs::write(folders.inbox.join("two.ndjson"), "{\"n\":3}\n").unwrap();
    let mut source = BucketSource::connect(notification_config(&folders))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();

    assert_eq!(post(address, &aws_body("day one.ndjson", "e1")).await, 200);
    let events = next(&mut source).await.expect("the notified object");
    assert_eq!(events.len(), 2);
    assert_eq!(key_of(&events[0]), "day one.ndjson");
    assert_eq!(spooled(&folders).await, 1, "kept until done");
    // Acknowledged before the reader reported the object's end (as a pipeline may):
    // the object completes when the end is seen.
    source.ack(&delta_of(&events)).await.unwrap();
    assert!(next(&mut source).await.is_none());
    assert_eq!(spooled(&folders).await, 0);

    // The same notification again: dropped, no records.
    assert_eq!(post(address, &aws_body("day one.ndjson", "e1")).await, 200);
    assert!(
        next(&mut source).await.is_none(),
        "a repeat must not be processed"
    );

    // MinIO's shape names its object the same way.
    assert_eq!(post(address, &minio_body("two.ndjson", "e2")).await, 200);
    let events = next(&mut source).await.expect("the MinIO-notified object");
    assert_eq!(key_of(&events[0]), "two.ndjson");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_notifications_are_refused_or_kept_and_survive_a_restart() {
    let folders = folders();
    let mut source = BucketSource::connect(notification_config(&folders))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    assert_eq!(post(address, "{not json").await, 400);
    assert_eq!(post(address, r#"{"Event":"s3:TestEvent"}"#).await, 200);

    // A notification for an object that does not exist: reported, kept, not done.
    assert_eq!(post(address, &aws_body("missing.ndjson", "m1")).await, 200);
    assert!(next(&mut source).await.is_none());
    assert_eq!(spooled(&folders).await, 1);
    drop(source);

    // The object appears; after a restart the spooled notification is processed.
    std::fs::write(folders.inbox.join("missing.ndjson"), "{\"late\":true}\n").unwrap();
    let mut source = BucketSource::connect(notification_config(&folders))
        .await
        .unwrap();
    let events = next(&mut source).await.expect("the spooled object");
    assert_eq!(key_of(&events[0]), "missing.ndjson");
    source.ack(&delta_of(&events)).await.unwrap();
    assert!(next(&mut source).await.is_none());
    assert_eq!(spooled(&folders).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_acknowledged_before_its_end_was_seen_is_still_marked_done() {
    let folders = folders();
    std::fs::write(folders.inbox.join("a.ndjson"), "{\"n\":1}\n").unwrap();
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    let events = source.next_events().await.unwrap().unwrap();
    // The pipeline commits before asking for more events.
    source.ack(&delta_of(&events)).await.unwrap();
    assert!(drain(&mut source).await.is_empty());
    drop(source);
    let mut source = BucketSource::connect(config(&folders, true)).await.unwrap();
    assert!(drain(&mut source).await.is_empty(), "not read again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_of_missing_objects_are_given_up_and_the_spool_drains() {
    let folders = folders();
    std::fs::write(folders.inbox.join("real.ndjson"), "{\"n\":1}\n").unwrap();
    let config = BucketSourceConfig {
        missing_timeout: Duration::from_millis(300),
        ..notification_config(&folders)
    };
    let mut source = BucketSource::connect(config).await.unwrap();
    let address = source.notification_address().unwrap();
    // One POST of 10,000 notices for objects that do not exist, one that does, and keys
    // listing skips.
    const BOGUS: usize = 10_000;
    let record = |key: &str| {
        format!(
            r#"{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"landing"}},"object":{{"key":"{key}","eTag":"e"}}}}}}"#
        )
    };
    let mut records: Vec<String> = (0..BOGUS)
        .map(|i| record(&format!("bogus/{i:05}.ndjson")))
        .collect();
    records.push(record("real.ndjson"));
    records.push(record("_sluice/x.ndjson"));
    records.push(record("in/.hidden.ndjson"));
    let body = format!(r#"{{"Records":[{}]}}"#, records.join(","));
    assert!(body.len() > 1_000_000);
    // The endpoint answers once every notice is handed over, so the source reads meanwhile.
    let posted = tokio::spawn(async move { post(address, &body).await });

    let mut given_up = std::collections::HashSet::new();
    let mut real = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while given_up.len() < BOGUS || real == 0 || spooled(&folders).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} given up, {} still spooled",
            given_up.len(),
            spooled(&folders).await
        );
        let Some(events) = next_within(&mut source, Duration::from_millis(500)).await else {
            continue;
        };
        for event in &events {
            let key = key_of(event);
            if key == "real.ndjson" {
                assert!(event.unreadable.is_none());
                real += 1;
                continue;
            }
            assert!(
                key.starts_with("bogus/"),
                "{key}: skipped keys are not read"
            );
            let reason = event.unreadable.as_deref().expect("a dead-letter event");
            assert!(reason.contains("still missing"), "{reason}");
            let notice: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            assert_eq!(notice["key"], key.as_str(), "the notice is the payload");
            assert!(given_up.insert(key), "given up once");
        }
        // The platform acknowledges a dead letter once it is durable.
        source.ack(&delta_of(&events)).await.unwrap();
    }
    assert_eq!(real, 1);
    assert_eq!(posted.await.unwrap(), 200);
    drop(source);
    // Nothing left for the next start.
    assert_eq!(spooled(&folders).await, 0);
}

#[test]
fn notices_for_another_bucket_are_refused() {
    let filter = NoticeFilter {
        bucket: Some("landing".into()),
        ..NoticeFilter::default()
    };
    let notices =
        super::notification::parse_notification(aws_body("a.ndjson", "e").as_bytes()).unwrap();
    assert!(filter.accepts(&notices[0]));
    let other = aws_body("a.ndjson", "e").replace("\"landing\"", "\"other\"");
    let notices = super::notification::parse_notification(other.as_bytes()).unwrap();
    assert!(!filter.accepts(&notices[0]));
}

/// Reads of one key fail, as a store that breaks while an object is fetched.
#[derive(Debug)]
struct ReadsOfFail(&'static str);

impl crate::faulty_store::Faults for ReadsOfFail {
    fn before(
        &self,
        request: crate::faulty_store::Request,
        location: &Path,
    ) -> crate::faulty_store::Fault {
        if request == crate::faulty_store::Request::Get && location.as_ref().ends_with(self.0) {
            crate::faulty_store::Fault::Fail("connection reset")
        } else {
            crate::faulty_store::Fault::Pass
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_run_fails_when_an_object_could_not_be_read() {
    let folders = folders();
    std::fs::write(folders.inbox.join("good.ndjson"), "{\"n\":1}\n").unwrap();
    std::fs::write(folders.inbox.join("unreachable.ndjson"), "{\"n\":2}\n").unwrap();
    let input = crate::faulty_store::FaultyStore::new(
        Arc::new(LocalFileSystem::new_with_prefix(&folders.inbox).unwrap()),
        ReadsOfFail("unreachable.ndjson"),
    );
    let mut source = BucketSource::connect(BucketSourceConfig {
        input_store: Arc::new(input),
        ..config(&folders, true)
    })
    .await
    .unwrap();
    let mut keys = Vec::new();
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(10), source.next_events())
            .await
            .expect("bounded")
        {
            Ok(Some(events)) => {
                keys.extend(events.iter().map(key_of));
                source.ack(&delta_of(&events)).await.unwrap();
            }
            Ok(None) => panic!("a one-shot run ended as a success with an object unread"),
            Err(error) => break error,
        }
    };
    assert_eq!(keys, vec!["good.ndjson"]);
    assert!(
        error
            .to_string()
            .contains("1 of the objects found could not be read"),
        "{error}"
    );
}
