//! Notification bodies as S3 servers send them, for tests that play recorded
//! notifications (AWS-shaped: keys URL-encoded; MinIO-shaped: the same records wrapped
//! with top-level `EventName` and `Key`).
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::{Click, Env, Sluice, count_ids, done_objects, read_rows, wait_for};

/// Uploads object `n` of a bucket test to `key`: clicks `n * per_object ..` as NDJSON,
/// `per_object` of them. Returns its etag, unquoted.
pub async fn put_clicks(store: &dyn ObjectStore, key: &str, n: usize, per_object: usize) -> String {
    let payload: String = (n * per_object..(n + 1) * per_object)
        .map(|i| Click::numbered(i).json() + "\n")
        .collect();
    let put = store
        .put(
            &ObjectPath::parse(key).unwrap(),
            PutPayload::from(payload.into_bytes()),
        )
        .await
        .unwrap();
    put.e_tag.unwrap_or_default().trim_matches('"').to_owned()
}

/// Waits (120 s at most) until the job has done all `objects` of a bucket test, then
/// asserts each of their `per_object` records landed once under `lake`.
pub async fn wait_every_object_once(
    env: &Env,
    lake: &str,
    sluice: &mut Sluice,
    (objects, per_object): (usize, usize),
) {
    wait_for("every object done", Duration::from_secs(120), async || {
        sluice.assert_running();
        done_objects(env, lake).await == objects
    })
    .await;
    let rows = read_rows(env, lake).await;
    assert_eq!(rows.len(), objects * per_object, "{}", sluice.logs());
    assert!(count_ids(&rows).values().all(|&n| n == 1));
}

/// After the `objects` were notified again: still one row per record under `lake`, and
/// every object done.
pub async fn assert_repeats_changed_nothing(
    env: &Env,
    lake: &str,
    (objects, per_object): (usize, usize),
) {
    let rows = read_rows(env, lake).await;
    assert_eq!(
        rows.len(),
        objects * per_object,
        "no duplicate rows after repeated notifications"
    );
    assert_eq!(done_objects(env, lake).await, objects);
}

/// Waits (30 s at most) until the running job accepts connections on its notification
/// endpoint at `address`.
pub async fn wait_listening(sluice: &mut Sluice, address: &str) {
    wait_for(
        "the notification endpoint",
        Duration::from_secs(30),
        async || {
            sluice.assert_running();
            tokio::net::TcpStream::connect(address).await.is_ok()
        },
    )
    .await;
}

/// S3's key encoding in notifications: `+` for space, `%XX` for other reserved bytes.
pub fn url_encode_key(key: &str) -> String {
    let mut out = String::new();
    for byte in key.bytes() {
        match byte {
            b' ' => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A recorded notification body for one object: AWS-shaped, or MinIO-shaped (top-level
/// `EventName` and `Key` around the records).
pub fn body(bucket: &str, key: &str, etag: &str, minio: bool) -> String {
    let encoded = url_encode_key(key);
    let record = format!(
        r#"{{"eventSource":"{}","eventName":"{}ObjectCreated:Put","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{encoded}","size":1,"eTag":"{etag}","sequencer":"0A"}}}}}}"#,
        if minio { "minio:s3" } else { "aws:s3" },
        if minio { "s3:" } else { "" },
    );
    if minio {
        format!(
            r#"{{"EventName":"s3:ObjectCreated:Put","Key":"{bucket}/{encoded}","Records":[{record}]}}"#
        )
    } else {
        format!(r#"{{"Records":[{record}]}}"#)
    }
}

/// POSTs `body` to a job's notification endpoint at `address`; returns the status code.
pub async fn post(address: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: sluice\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response[9..12].parse().unwrap()
}

/// Waits (60 s at most) until the running job has logged `objects` repeated notifications
/// and a malformed one; returns the log line reporting the malformed one.
pub async fn wait_repeats_and_malformed(sluice: &mut Sluice, objects: usize) -> String {
    wait_for(
        "the repeated and the malformed notifications",
        Duration::from_secs(60),
        async || {
            sluice.assert_running();
            let logs = sluice.logs();
            logs.matches("repeated notification for an object already done")
                .count()
                >= objects
                && logs.contains("malformed bucket notification")
        },
    )
    .await;
    let logs = sluice.logs();
    let report = logs
        .lines()
        .find(|line| line.contains("malformed bucket notification"))
        .unwrap();
    report.to_owned()
}
