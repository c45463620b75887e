//! Notification bodies as S3 servers send them, for tests that play recorded
//! notifications (AWS-shaped: keys URL-encoded; MinIO-shaped: the same records wrapped
//! with top-level `EventName` and `Key`).
#![allow(dead_code)]

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
pub async fn wait_repeats_and_malformed(sluice: &mut super::Sluice, objects: usize) -> String {
    super::wait_for(
        "the repeated and the malformed notifications",
        std::time::Duration::from_secs(60),
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
