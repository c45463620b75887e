//! The dead-letter destination: records the function rejected (`$error`) or that a failing
//! batch was split down to, kept with their error so nothing is silently dropped.
//!
//! This build writes dead letters as NDJSON objects into an object store: the job's
//! `dead_letter.url`, or `<output.url>/_sluice/dead_letters` when none is declared. One
//! line per record: the original payload (UTF-8 text, or base64 with
//! `payload_encoding = "base64"`), key (likewise), headers (UTF-8 text, or
//! `{"base64": …}`), timestamp, origin, error, attempts and when it failed.
//! [`DeadLetterSink::flush`] runs before the positions of those records are acknowledged,
//! so a record is either redelivered or in the destination. [`replay`] reads them back.
//!
//! Naming: the dead letters of a Kafka range are one object named from the range,
//! `<topic>-<partition>-<first:020>-<last:020>.ndjson`, so writing the range again (a redo
//! after a crash) overwrites it instead of adding a second copy. Dead letters of other
//! splits go into `dead-<run id>-<seq:06>.ndjson` objects.

pub mod replay;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};
use sluice_connectors::{Event, PositionRange, SplitId};

use crate::commit::names::range_stem;
use crate::output::store::{OutputLocation, StoreError, open_store};
use crate::spec::JobSpec;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("invalid dead-letter object name {name}: {message} (internal error)")]
    Path { name: String, message: String },
    #[error(
        "could not write {count} dead letters to {path}: {source}; their positions stay unacknowledged"
    )]
    Write {
        count: usize,
        path: String,
        source: object_store::Error,
    },
}

/// One rejected record and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    split: SplitId,
    line: Value,
}

impl DeadLetter {
    pub fn new(event: &Event, error: &str, attempts: u32) -> Self {
        let (payload, payload_encoding) = text_or_base64(&event.payload);
        let (key, key_encoding) = match &event.key {
            Some(key) => {
                let (text, encoding) = text_or_base64(key);
                (Value::String(text), Value::String(encoding.into()))
            }
            None => (Value::Null, Value::Null),
        };
        let headers: BTreeMap<&str, Value> = event
            .headers
            .iter()
            .map(|h| {
                let value = h
                    .value
                    .as_ref()
                    .map_or(Value::Null, |v| match text_or_base64(v) {
                        (text, "utf8") => Value::String(text),
                        (encoded, _) => json!({ "base64": encoded }),
                    });
                (h.name.as_str(), value)
            })
            .collect();
        Self {
            split: event.origin.split(),
            line: json!({
                "error": error,
                "kind": "record",
                "attempts": attempts,
                "failed_at_ms": now_ms(),
                "origin": event.origin.to_json(),
                "key": key,
                "key_encoding": key_encoding,
                "headers": headers,
                "timestamp_ms": event.timestamp_ms,
                "payload": payload,
                "payload_encoding": payload_encoding,
            }),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn text_or_base64(bytes: &Bytes) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), "utf8"),
        Err(_) => (BASE64.encode(bytes), "base64"),
    }
}

/// The job's dead-letter destination, opened on its own (for `sluice dlq`).
pub fn open_dead_letter_store(spec: &JobSpec) -> Result<OutputLocation, StoreError> {
    let output = open_store(&spec.output.url, &spec.output.options)?;
    dead_letter_location(spec, &output)
}

/// Where a job's dead letters go: its `dead_letter.url`, or `_sluice/dead_letters` below
/// the output location (same store) when none is declared.
pub fn dead_letter_location(
    spec: &JobSpec,
    output: &OutputLocation,
) -> Result<OutputLocation, StoreError> {
    let Some(url) = &spec.dead_letter else {
        let prefix =
            output
                .object_path("_sluice/dead_letters")
                .map_err(|e| StoreError::InvalidUrl {
                    url: output.url.clone(),
                    message: e.to_string(),
                })?;
        return Ok(OutputLocation {
            store: output.store.clone(),
            prefix,
            url: format!("{}/_sluice/dead_letters", output.url.trim_end_matches('/')),
        });
    };
    // The output's store options (endpoint, credentials) apply when the dead letters go
    // to the same kind of store.
    let same_scheme = url.split_once("://").map(|(scheme, _)| scheme)
        == spec.output.url.split_once("://").map(|(scheme, _)| scheme);
    let options = if same_scheme {
        spec.output.options.clone()
    } else {
        Default::default()
    };
    open_store(url, &options)
}

/// Buffers dead letters until the next commit, then writes them as NDJSON objects (see
/// the module docs for their names).
pub struct DeadLetterSink {
    location: OutputLocation,
    file_stem: String,
    seq: u64,
    pending: Vec<DeadLetter>,
}

impl DeadLetterSink {
    /// A sink writing to `location` (see [`dead_letter_location`]); `run_id` names the
    /// objects of splits that are not Kafka partitions.
    pub fn new(location: OutputLocation, run_id: &str) -> Self {
        Self {
            location,
            file_stem: format!("dead-{run_id}"),
            seq: 0,
            pending: Vec::new(),
        }
    }

    pub fn push(&mut self, letter: DeadLetter) {
        self.pending.push(letter);
    }

    /// The object (as stored) each Kafka range with buffered dead letters will be written
    /// to by [`Self::flush`] with the same `ranges`: what a commit intent lists.
    pub fn planned_objects(
        &self,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> BTreeMap<SplitId, String> {
        let mut planned = BTreeMap::new();
        for letter in &self.pending {
            if planned.contains_key(&letter.split) {
                continue;
            }
            if let Some(name) = self.range_name(&letter.split, ranges)
                && let Ok(path) = self.location.object_path(&name)
            {
                planned.insert(letter.split.clone(), path.to_string());
            }
        }
        planned
    }

    fn range_name(
        &self,
        split: &SplitId,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> Option<String> {
        let range = ranges.get(split)?;
        range_stem(split, *range).map(|stem| format!("{stem}.ndjson"))
    }

    /// Writes every buffered dead letter, one object per Kafka range in `ranges` and one
    /// for the rest; returns how many. On error they all stay buffered and the next flush
    /// writes them again under the same names.
    pub async fn flush(
        &mut self,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<usize, DeadLetterError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let mut objects: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
        let unranged = format!("{}-{:06}.ndjson", self.file_stem, self.seq);
        for letter in &self.pending {
            let name = self
                .range_name(&letter.split, ranges)
                .unwrap_or_else(|| unranged.clone());
            let (count, body) = objects.entry(name).or_default();
            *count += 1;
            body.extend_from_slice(letter.line.to_string().as_bytes());
            body.push(b'\n');
        }
        let wrote_unranged = objects.contains_key(&unranged);
        for (name, (count, body)) in objects {
            let path = self
                .location
                .object_path(&name)
                .map_err(|e| DeadLetterError::Path {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            self.location
                .store
                .put(&path, PutPayload::from(body))
                .await
                .map_err(|source| DeadLetterError::Write {
                    count,
                    path: format!("{}/{name}", self.location.url.trim_end_matches('/')),
                    source,
                })?;
        }
        if wrote_unranged {
            self.seq += 1;
        }
        let count = self.pending.len();
        self.pending.clear();
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_connectors::{Header, Origin};

    use super::*;

    #[test]
    fn keeps_the_original_record_and_its_error() {
        let event = Event {
            payload: Bytes::from_static(b"\xff\x00"),
            key: Some(Bytes::from_static(b"user-1")),
            headers: vec![Header {
                name: "trace".into(),
                value: Some(Bytes::from_static(b"abc")),
            }],
            timestamp_ms: Some(1_700_000_000_000),
            origin: Origin::Kafka {
                topic: Arc::from("clicks"),
                partition: 2,
                offset: 41,
            },
        };
        let letter = DeadLetter::new(&event, "bad date", 3).line;
        assert_eq!(letter["error"], "bad date");
        assert_eq!(letter["attempts"], 3);
        assert_eq!(letter["payload"], BASE64.encode(b"\xff\x00"));
        assert_eq!(letter["payload_encoding"], "base64");
        assert_eq!(letter["key"], "user-1");
        assert_eq!(letter["headers"]["trace"], "abc");
        assert_eq!(letter["origin"]["offset"], 41);
        assert_eq!(letter["origin"]["topic"], "clicks");
    }
}
