//! Bucket notifications: S3 event JSON, in the shapes real servers send, turned into
//! [`ObjectNotice`]s.
//!
//! Shapes accepted:
//! - AWS S3 and Ceph RGW: `{"Records": [{"eventName", "eventSource", "s3": {"bucket":
//!   {"name"}, "object": {"key", "size", "eTag", "versionId", "sequencer"}}}]}`. AWS
//!   URL-encodes keys (`+` for a space); Ceph sends them as they are (`eventSource` starts
//!   with `ceph:`), so only non-Ceph keys are decoded.
//! - MinIO: the same `Records`, wrapped with top-level `EventName` and `Key`.
//! - `s3:TestEvent` (sent when a notification is configured): no notices.
//!
//! The structs are our own and lenient (every field optional, unknown fields ignored)
//! rather than a library's strict AWS types: Ceph and MinIO add and omit fields, and a
//! notification we cannot fully type must still name its object.
//!
//! [`NoticeFilter`] keeps the event names and key prefix/suffix a job asked for. A
//! repeated notification is dropped by the source, by object version (key and etag):
//! one done already is in its cursor, one in progress is in its queue or in flight.

use serde::{Deserialize, Serialize};

/// One object the bucket says was created (or removed), as the source needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectNotice {
    pub event_name: String,
    pub bucket: String,
    /// The object key, decoded.
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// The server's order of notifications of one key (hexadecimal); kept with the
    /// notice in the spool and in a given-up notice's dead letter, not compared.
    pub sequencer: Option<String>,
    /// When the spool took the notification (milliseconds since the epoch); set by
    /// [`super::spool::NoticeSpool::put`], so a notice's age survives restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an S3 event notification: {0}")]
pub struct NotificationError(String);

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "Records", default)]
    records: Vec<Record>,
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName")]
    event_name: Option<String>,
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Option<Bucket>,
    object: Option<Object>,
}

#[derive(Deserialize)]
struct Bucket {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Object {
    key: Option<String>,
    size: Option<u64>,
    #[serde(rename = "eTag", alias = "etag")]
    etag: Option<String>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// Parses one notification body into its notices (none for a test event).
pub fn parse_notification(body: &[u8]) -> Result<Vec<ObjectNotice>, NotificationError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| NotificationError(e.to_string()))?;
    if body.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let mut notices = Vec::with_capacity(body.records.len());
    for (index, record) in body.records.into_iter().enumerate() {
        let missing = |what: &str| NotificationError(format!("record {index} has no {what}"));
        let s3 = record.s3.ok_or_else(|| missing("s3 entity"))?;
        let bucket = s3
            .bucket
            .and_then(|b| b.name)
            .ok_or_else(|| missing("bucket name"))?;
        let object = s3.object.ok_or_else(|| missing("object"))?;
        let raw_key = object.key.ok_or_else(|| missing("object key"))?;
        let from_ceph = record
            .event_source
            .as_deref()
            .is_some_and(|source| source.starts_with("ceph:"));
        let key = if from_ceph {
            raw_key
        } else {
            url_decode_key(&raw_key).ok_or_else(|| {
                NotificationError(format!(
                    "record {index}: key {raw_key:?} is not valid URL encoding"
                ))
            })?
        };
        notices.push(ObjectNotice {
            event_name: record.event_name.unwrap_or_default(),
            bucket,
            key,
            size: object.size,
            etag: object
                .etag
                .map(|e| e.trim_matches('"').to_owned())
                .filter(|e| !e.is_empty()),
            version_id: object.version_id.filter(|v| !v.is_empty()),
            sequencer: object.sequencer.filter(|s| !s.is_empty()),
            received_ms: None,
        });
    }
    Ok(notices)
}

/// S3's key encoding: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn url_decode_key(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = key.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Which notifications a job wants.
#[derive(Debug, Clone)]
pub struct NoticeFilter {
    /// Event name prefixes without the `s3:` part, e.g. `ObjectCreated:`.
    pub events: Vec<String>,
    pub prefix: String,
    pub suffix: String,
    /// The job's input bucket: a notice naming another bucket is refused (and logged).
    /// `None` for stores without bucket names (`file://`, `memory://`).
    pub bucket: Option<String>,
}

impl Default for NoticeFilter {
    fn default() -> Self {
        Self {
            events: vec!["ObjectCreated:".to_owned()],
            prefix: String::new(),
            suffix: String::new(),
            bucket: None,
        }
    }
}

/// The bucket named by an object-store URL (`s3://landing/in` → `landing`); `None` for
/// schemes without buckets (`file://`, `memory://`) or a URL without one.
pub fn bucket_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if matches!(scheme, "file" | "memory") {
        return None;
    }
    let bucket = rest.split('/').next().unwrap_or_default();
    (!bucket.is_empty()).then(|| bucket.to_owned())
}

impl NoticeFilter {
    /// Whether the job wants `notice`: its bucket, an event it asked for, a key with its
    /// prefix and suffix. A notice for another bucket is logged as refused.
    pub fn accepts(&self, notice: &ObjectNotice) -> bool {
        if let Some(bucket) = &self.bucket
            && notice.bucket != *bucket
        {
            tracing::warn!(bucket = %notice.bucket, expected = %bucket, key = %notice.key, "refused a notification for another bucket");
            return false;
        }
        let name = notice.event_name.trim_start_matches("s3:");
        self.events
            .iter()
            .any(|wanted| name.starts_with(wanted.trim_start_matches("s3:")))
            && notice.key.starts_with(&self.prefix)
            && notice.key.ends_with(&self.suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As AWS S3 sends it (key URL-encoded).
    const AWS: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
      "eventTime":"2026-11-28T10:00:00.000Z","eventName":"ObjectCreated:Put",
      "s3":{"s3SchemaVersion":"1.0","bucket":{"name":"landing","arn":"arn:aws:s3:::landing"},
      "object":{"key":"in/caf%C3%A9+menu+%2B1.csv","size":120,"eTag":"0123abc","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    /// As Ceph RGW pushes it (key as it is, quoted etag, extra fields).
    const CEPH: &str = r#"{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"default",
      "eventTime":"2026-11-28T10:00:00.000000Z","eventName":"ObjectCreated:Put","userIdentity":{"principalId":"sluice"},
      "s3":{"s3SchemaVersion":"1.0","configurationId":"sluice","bucket":{"name":"landing","ownerIdentity":{"principalId":"sluice"},"arn":"arn:aws:s3:::landing","id":"x"},
      "object":{"key":"in/café menu +1.csv","size":120,"eTag":"\"0123abc\"","versionId":"","sequencer":"A1B2C3D4","metadata":[],"tags":[]}},
      "eventId":"1", "opaqueData":""}]}"#;

    /// As MinIO sends it: top-level EventName and Key around the records.
    const MINIO: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"landing/in/caf%C3%A9+menu+%2B1.csv",
      "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put",
      "s3":{"bucket":{"name":"landing"},"object":{"key":"in%2Fcaf%C3%A9+menu+%2B1.csv","size":120,"eTag":"0123abc","sequencer":"17B2"}}}]}"#;

    #[test]
    fn every_server_shape_names_the_same_object() {
        for body in [AWS, CEPH, MINIO] {
            let notices = parse_notification(body.as_bytes()).unwrap();
            assert_eq!(notices.len(), 1, "{body}");
            assert_eq!(notices[0].bucket, "landing");
            assert_eq!(notices[0].key, "in/café menu +1.csv", "{body}");
            assert_eq!(notices[0].etag.as_deref(), Some("0123abc"));
            assert_eq!(notices[0].size, Some(120));
            assert!(NoticeFilter::default().accepts(&notices[0]));
        }
    }

    #[test]
    fn test_events_are_ignored_and_garbage_is_an_error() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-28T10:00:00Z","Bucket":"landing"}"#;
        assert!(parse_notification(test.as_bytes()).unwrap().is_empty());
        assert!(parse_notification(b"{not json").is_err());
        let no_key = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}"#;
        let error = parse_notification(no_key.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("object key"), "{error}");
    }

    #[test]
    fn filters_by_event_name_prefix_and_suffix() {
        let mut notice = parse_notification(AWS.as_bytes()).unwrap().remove(0);
        let filter = NoticeFilter {
            events: vec!["s3:ObjectCreated:".into()],
            prefix: "in/".into(),
            suffix: ".csv".into(),
            bucket: Some("landing".into()),
        };
        assert!(filter.accepts(&notice));
        notice.bucket = "elsewhere".into();
        assert!(!filter.accepts(&notice), "another bucket");
        notice.bucket = "landing".into();
        notice.event_name = "ObjectRemoved:Delete".into();
        assert!(!filter.accepts(&notice));
        notice.event_name = "ObjectCreated:Copy".into();
        notice.key = "out/x.csv".into();
        assert!(!filter.accepts(&notice));
    }

    #[test]
    fn the_bucket_comes_from_the_input_url() {
        assert_eq!(bucket_of_url("s3://landing/in").as_deref(), Some("landing"));
        assert_eq!(bucket_of_url("s3://landing").as_deref(), Some("landing"));
        assert_eq!(bucket_of_url("gs://b/x/y").as_deref(), Some("b"));
        assert_eq!(bucket_of_url("file:///tmp/in"), None);
        assert_eq!(bucket_of_url("memory://in"), None);
        assert_eq!(bucket_of_url("relative/folder"), None);
    }
}
