//! Reading dead letters back: `sluice dlq list|show|replay`.
//!
//! Replay runs the letters through the job again (after the function was fixed) as a
//! finite [`Source`]: each letter becomes an event with its original payload, key,
//! headers and timestamp, and the origin [`Origin::DeadLetter`] (where the letter is kept
//! and its line there: the object and line in a store, `<topic>/<partition>` and offset + 1
//! in a topic, the queue and its order of arrival in a queue). Once letters are
//! acknowledged — their output is durable, or they failed again and are in new dead
//! letters — they leave the pending set, so a second replay does not run them twice:
//!
//! | destination | pending letters | after replay |
//! |---|---|---|
//! | store | objects outside `replayed/` | a fully replayed object is moved under `replayed/` (nothing is deleted outright) |
//! | Kafka topic | from the dead-letter group's committed offset to the end of each partition | the group's offset is committed past them |
//! | AMQP queue | the messages in the queue when reading begins | each message is acknowledged (removed); the rest go back to the queue when the replay ends |
//!
//! Listing and showing never change anything: a topic is read without committing, and
//! messages taken from a queue are returned to it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde_json::Value;
use sluice_connectors::{CheckpointDelta, Event, Header, Origin, Source, SourceError, SplitId};
use tracing::info;

use sluice_connectors::dead_letter::{LetterGroup, PendingLetters, ReadLettersError};

use super::open_dead_letter_store;
use crate::output::store::{OutputLocation, StoreError};
use crate::spec::{DeadLetterSpec, JobSpec};

/// Objects moved here once replayed, relative to the dead-letter prefix.
const REPLAYED: &str = "replayed";

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dead letters at {url}: {source}")]
    Read {
        url: String,
        source: object_store::Error,
    },
    #[error("dead letter {object} line {line}: {message} (not written by this version of sluice?)")]
    Malformed {
        object: String,
        line: u64,
        message: String,
    },
    #[error(transparent)]
    Broker(#[from] ReadLettersError),
}

/// Where some letters are kept — an object, a partition, a queue — and the letters, each
/// with its line there (1-based; offset + 1 in a partition).
#[derive(Debug, Clone)]
pub struct LetterObject {
    /// Name relative to the dead-letter prefix; `<topic>/<partition>`; the queue.
    pub name: String,
    pub letters: Vec<(u64, Value)>,
}

/// The pending dead letters of a job.
#[derive(Debug, Clone)]
pub struct DeadLetterListing {
    /// The destination, for people (a URL without password, a topic, a queue).
    pub destination: String,
    /// What [`LetterObject`]s are here: `objects`, `partitions` or `queues`.
    pub unit: &'static str,
    pub objects: Vec<LetterObject>,
}

impl DeadLetterListing {
    pub fn total(&self) -> usize {
        self.objects.iter().map(|o| o.letters.len()).sum()
    }
}

/// Where pending letters were read from, kept to acknowledge them.
enum Pending {
    Store(OutputLocation),
    /// A topic or queue, through its connector.
    Broker(Box<dyn PendingLetters>),
}

/// Every pending dead letter (at most `limit` from a queue), changing nothing.
pub async fn read_dead_letters(
    spec: &JobSpec,
    limit: Option<usize>,
) -> Result<DeadLetterListing, ReplayError> {
    let (pending, listing) = read_pending(spec, limit).await?;
    if let Pending::Broker(letters) = pending {
        letters.release().await;
    }
    Ok(listing)
}

async fn read_pending(
    spec: &JobSpec,
    limit: Option<usize>,
) -> Result<(Pending, DeadLetterListing), ReplayError> {
    match spec.dead_letter.as_ref().and_then(DeadLetterSpec::broker) {
        Some(broker) => {
            let pending = broker.read_pending(&spec.name, limit).await?;
            let objects = pending
                .groups()
                .iter()
                .map(|LetterGroup { name, letters }| LetterObject {
                    name: name.clone(),
                    letters: letters.clone(),
                })
                .collect();
            let listing = DeadLetterListing {
                destination: broker.describe(),
                unit: broker.unit(),
                objects,
            };
            Ok((Pending::Broker(pending), listing))
        }
        None => {
            let (location, objects) = read_store(spec).await?;
            let listing = DeadLetterListing {
                destination: location.url.clone(),
                unit: "objects",
                objects,
            };
            Ok((Pending::Store(location), listing))
        }
    }
}

/// Every dead-letter object not yet replayed, oldest name first.
async fn read_store(spec: &JobSpec) -> Result<(OutputLocation, Vec<LetterObject>), ReplayError> {
    let location = open_dead_letter_store(spec)?;
    let read_error = |source| ReplayError::Read {
        url: location.url.clone(),
        source,
    };
    let prefix = (!location.prefix.as_ref().is_empty()).then_some(&location.prefix);
    let mut listed: Vec<_> = location
        .store
        .list(prefix)
        .try_collect()
        .await
        .map_err(read_error)?;
    listed.sort_by(|a, b| a.location.cmp(&b.location));
    let mut objects = Vec::new();
    for meta in listed {
        let name = relative_name(&location, &meta.location);
        if name.starts_with(&format!("{REPLAYED}/")) || !name.ends_with(".ndjson") {
            continue;
        }
        let body = location
            .store
            .get(&meta.location)
            .await
            .map_err(read_error)?
            .bytes()
            .await
            .map_err(read_error)?;
        let mut letters = Vec::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let letter = serde_json::from_slice(line).map_err(|e| ReplayError::Malformed {
                object: name.clone(),
                line: i as u64 + 1,
                message: e.to_string(),
            })?;
            letters.push((i as u64 + 1, letter));
        }
        objects.push(LetterObject { name, letters });
    }
    Ok((location, objects))
}

fn relative_name(location: &OutputLocation, path: &Path) -> String {
    let prefix = location.prefix.as_ref();
    let full = path.as_ref();
    full.strip_prefix(prefix)
        .map_or(full, |rest| rest.trim_start_matches('/'))
        .to_owned()
}

/// Turns a letter back into the event it was made from.
pub fn letter_to_event(letter: &Value, object: &Arc<str>, line: u64) -> Result<Event, String> {
    let payload = decode_field(letter, "payload", "payload_encoding")?
        .ok_or_else(|| "no payload".to_owned())?;
    let key = decode_field(letter, "key", "key_encoding")?;
    let mut headers = Vec::new();
    if let Some(map) = letter.get("headers").and_then(Value::as_object) {
        for (name, value) in map {
            let value = match value {
                Value::Null => None,
                Value::String(text) => Some(Bytes::from(text.clone())),
                Value::Object(o) => match o.get("base64").and_then(Value::as_str) {
                    Some(b64) => Some(Bytes::from(
                        BASE64
                            .decode(b64)
                            .map_err(|e| format!("header {name}: {e}"))?,
                    )),
                    None => return Err(format!("header {name}: unknown encoding")),
                },
                other => return Err(format!("header {name}: unexpected {other}")),
            };
            headers.push(Header {
                name: Arc::from(name.as_str()),
                value,
            });
        }
    }
    Ok(Event {
        payload,
        key,
        headers: headers.into(),
        timestamp_ms: letter.get("timestamp_ms").and_then(Value::as_i64),
        origin: Origin::DeadLetter {
            object: object.clone(),
            line,
        },
        unreadable: None,
    })
}

fn decode_field(letter: &Value, field: &str, encoding: &str) -> Result<Option<Bytes>, String> {
    let Some(text) = letter.get(field).and_then(Value::as_str) else {
        return Ok(None);
    };
    match letter.get(encoding).and_then(Value::as_str) {
        Some("base64") => BASE64
            .decode(text)
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| format!("{field}: {e}")),
        _ => Ok(Some(Bytes::from(text.to_owned()))),
    }
}

/// A finite source over dead letters; see the module docs.
pub struct ReplaySource {
    pending: Pending,
    queue: VecDeque<Event>,
    /// Per object: its last line (a store object is retired once it is acknowledged).
    objects: HashMap<Arc<str>, u64>,
    /// Letters acknowledged so far, for progress displays.
    progress: Arc<AtomicU64>,
}

impl ReplaySource {
    /// Reads every pending dead letter; returns the source and the number of letters.
    pub async fn open(spec: &JobSpec) -> Result<(Self, u64), ReplayError> {
        let (pending, listing) = read_pending(spec, None).await?;
        let mut queue = VecDeque::new();
        let mut objects = HashMap::new();
        for object in listing.objects {
            let name: Arc<str> = Arc::from(object.name.as_str());
            for (line, letter) in &object.letters {
                let event = letter_to_event(letter, &name, *line).map_err(|message| {
                    ReplayError::Malformed {
                        object: object.name.clone(),
                        line: *line,
                        message,
                    }
                })?;
                queue.push_back(event);
            }
            let last = object.letters.last().map_or(0, |(line, _)| *line);
            objects.insert(name, last);
        }
        let total = queue.len() as u64;
        Ok((
            Self {
                pending,
                queue,
                objects,
                progress: Arc::new(AtomicU64::new(0)),
            },
            total,
        ))
    }

    /// Letters acknowledged so far.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.progress.clone()
    }

    /// Marks the letters `first..=last` of `name` as replayed (see the module docs).
    async fn retire(&self, name: &str, first: u64, last: u64) -> Result<(), String> {
        match &self.pending {
            Pending::Store(location) => {
                let Some(&size) = self.objects.get(name) else {
                    return Ok(());
                };
                if last < size {
                    return Ok(());
                }
                move_replayed(location, name).await.map_err(|e| {
                    format!("could not move the replayed object under {REPLAYED}/: {e}")
                })?;
                info!(object = name, letters = size, "dead letters replayed");
            }
            Pending::Broker(letters) => letters.retire(name, first, last).await?,
        }
        Ok(())
    }
}

/// Moves a fully replayed object under `replayed/` (copy, then delete).
async fn move_replayed(location: &OutputLocation, name: &str) -> object_store::Result<()> {
    let path = |name: &str| {
        location
            .object_path(name)
            .map_err(|e| object_store::Error::Generic {
                store: "dead letters",
                source: Box::new(e),
            })
    };
    let (from, to) = (path(name)?, path(&format!("{REPLAYED}/{name}"))?);
    let body = location.store.get(&from).await?.bytes().await?;
    location.store.put(&to, body.into()).await?;
    location.store.delete(&from).await
}

#[async_trait]
impl Source for ReplaySource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        if self.queue.is_empty() {
            return Ok(None);
        }
        let take = self.queue.len().min(1000);
        Ok(Some(self.queue.drain(..take).collect()))
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        for (split, range) in delta.iter() {
            let SplitId::DeadLetter { object: name } = split else {
                continue;
            };
            self.progress
                .fetch_add((range.last - range.first + 1) as u64, Ordering::Relaxed);
            self.retire(name, range.first as u64, range.last as u64)
                .await
                .map_err(|message| SourceError::Ack {
                    connector: "dead-letter replay",
                    positions: format!("{split}"),
                    message,
                })?;
        }
        Ok(())
    }

    fn backlog(&self) -> Option<u64> {
        Some(self.queue.len() as u64)
    }

    /// Letters taken from a queue and not acknowledged go back to it.
    async fn close(&mut self) {
        if let Pending::Broker(letters) = &self.pending {
            letters.release().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::DeadLetter;

    #[test]
    fn a_letter_turns_back_into_the_event_it_was_made_from() {
        let original = Event {
            payload: Bytes::from_static(b"\xff\x00binary"),
            key: Some(Bytes::from_static(b"user-1")),
            headers: vec![
                Header {
                    name: "trace".into(),
                    value: Some(Bytes::from_static(b"abc")),
                },
                Header {
                    name: "raw".into(),
                    value: Some(Bytes::from_static(b"\xfe")),
                },
                Header {
                    name: "empty".into(),
                    value: None,
                },
            ]
            .into(),
            timestamp_ms: Some(1_700_000_000_000),
            origin: Origin::Kafka {
                topic: Arc::from("clicks"),
                partition: 2,
                offset: 41,
            },
            unreadable: None,
        };
        let letter = DeadLetter::new(&original, "bad date", 3).line;
        let object: Arc<str> = Arc::from("dead-1.ndjson");
        let event = letter_to_event(&letter, &object, 7).unwrap();
        assert_eq!(event.payload, original.payload);
        assert_eq!(event.key, original.key);
        assert_eq!(event.timestamp_ms, original.timestamp_ms);
        let mut headers = event.headers.to_vec();
        headers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut expected = original.headers.to_vec();
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(headers, expected);
        assert_eq!(event.origin, Origin::DeadLetter { object, line: 7 });
    }

    #[test]
    fn a_letter_without_payload_is_refused() {
        let object: Arc<str> = Arc::from("x.ndjson");
        let error = letter_to_event(&serde_json::json!({"error": "e"}), &object, 1).unwrap_err();
        assert!(error.contains("payload"), "{error}");
    }
}
