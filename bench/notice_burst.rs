//! Queueing a burst of bucket notifications: what one notice costs the bucket source as
//! the number of notices it holds grows. Two cases, each over in-memory stores (so store
//! I/O is small and linear) and each run for several burst sizes:
//!
//! - **restart**: `N` notices in the spool, then `BucketSource::connect`, which lists the
//!   spool and queues every notice (de-duplicated against what it holds already);
//! - **missing**: `N` notices for objects that do not exist, POSTed to the webhook while
//!   the source runs, each looked for, looked for again, and given up as a dead letter
//!   that is acknowledged (the shape of the connector test with 10,000 such notices).
//!
//! A queue that costs O(1) or O(log n) per notice shows a flat µs/notice column; one that
//! scans what it holds shows µs/notice doubling with `N`.
//!
//! ```text
//! cargo build --profile perf --example notice_burst
//! target/perf/examples/notice_burst [N …]          # default 2500 5000 10000 20000
//! ```

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::memory::InMemory;
use object_store::path::Path;
use sluice_connectors::Source as _;
use sluice_connectors::bucket::feed::NotificationFeed;
use sluice_connectors::bucket::notification::{NoticeFilter, ObjectNotice};
use sluice_connectors::bucket::spool::NoticeSpool;
use sluice_connectors::bucket::{
    BucketSource, BucketSourceConfig, Discovery, InputCompression, InputFormat,
};
use sluice_connectors::testing::delta_of;

/// Notices per POST: the endpoint takes bodies of up to 2 MiB.
const PER_POST: usize = 4000;

fn config(spool: NoticeSpool, missing_timeout: Duration) -> BucketSourceConfig {
    let input = Arc::new(InMemory::new());
    BucketSourceConfig {
        job: "bench".into(),
        input_store: input,
        input_prefix: Path::from(""),
        input_url: "s3://landing".into(),
        cursor_store: Arc::new(InMemory::new()),
        cursor_path: Path::from("_sluice/bucket/cursor.json"),
        format: InputFormat::Auto,
        compression: InputCompression::Auto,
        discovery: Discovery::Notifications {
            feed: Box::new(NotificationFeed::Webhook {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: None,
            }),
            filter: NoticeFilter::default(),
            spool,
        },
        stop_when_idle: false,
        missing_timeout,
    }
}

fn spool() -> NoticeSpool {
    NoticeSpool::new(
        Arc::new(InMemory::new()),
        Path::from("_sluice/bucket/notices"),
    )
}

fn key(i: usize) -> String {
    format!("incoming/2026-12-07/part-{i:07}.ndjson")
}

fn notice(i: usize) -> ObjectNotice {
    ObjectNotice {
        event_name: "ObjectCreated:Put".into(),
        bucket: "landing".into(),
        key: key(i),
        size: Some(100),
        etag: Some(format!("etag-{i}")),
        version_id: None,
        sequencer: None,
        received_ms: None,
    }
}

/// Connecting with `count` notices in the spool: every one is queued.
async fn restart(count: usize) -> Duration {
    let spool = spool();
    for i in 0..count {
        spool.put(&notice(i)).await.unwrap();
    }
    let started = Instant::now();
    let source = BucketSource::connect(config(spool, Duration::from_secs(3600)))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(source.backlog(), Some(count as u64), "every notice queued");
    took
}

/// `count` notices for missing objects POSTed while the source runs, until every one is
/// given up and its dead letter acknowledged.
async fn missing(count: usize) -> Duration {
    let mut source = BucketSource::connect(config(spool(), Duration::from_millis(200)))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    let started = Instant::now();
    let posted = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for first in (0..count).step_by(PER_POST) {
            let records: Vec<String> = (first..(first + PER_POST).min(count))
                .map(|i| {
                    format!(
                        r#"{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"landing"}},"object":{{"key":"{}","eTag":"etag-{i}"}}}}}}"#,
                        key(i)
                    )
                })
                .collect();
            let response = client
                .post(format!("http://{address}/notify"))
                .body(format!(r#"{{"Records":[{}]}}"#, records.join(",")))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    });
    let mut given_up = 0;
    while given_up < count {
        let events = tokio::time::timeout(Duration::from_secs(600), source.next_events())
            .await
            .expect("the source stalled")
            .unwrap()
            .unwrap();
        assert!(events.iter().all(|event| event.unreadable.is_some()));
        given_up += events.len();
        source.ack(&delta_of(&events)).await.unwrap();
    }
    let took = started.elapsed();
    posted.await.unwrap();
    took
}

fn row(case: &str, count: usize, took: Duration) {
    println!(
        "{case:<8} {count:>7} {:>10.1} {:>12.2}",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / count as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse().expect("burst sizes are whole numbers"))
        .collect();
    let counts = if counts.is_empty() {
        vec![2500, 5000, 10_000, 20_000]
    } else {
        counts
    };
    println!("{:<8} {:>7} {:>10} {:>12}", "case", "N", "ms", "µs/notice");
    for &count in &counts {
        row("restart", count, restart(count).await);
    }
    for &count in &counts {
        row("missing", count, missing(count).await);
    }
}
