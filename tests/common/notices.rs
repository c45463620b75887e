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
