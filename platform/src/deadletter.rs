//! The dead-letter destination: records the function rejected (`$error`) or that a failing
//! batch was split down to, kept with their error so nothing is silently dropped.
//!
//! Three destinations (`[dead_letter]` in `job.toml`): NDJSON objects under a store
//! prefix — the job's `dead_letter.url`, or `<output.url>/_sluice/dead_letters` when
//! nothing is declared — or a broker: messages of a Kafka topic, persistent messages in
//! an AMQP queue. A broker destination is its connector's code
//! (`sluice_connectors::dead_letter`: the Kafka and AMQP connectors' `dead_letters.rs`);
//! this file knows it only as a [`LetterPublisher`]. Every dead letter is the same JSON object: its `id`, the
//! original payload (UTF-8 text, or base64 with `payload_encoding = "base64"`), key
//! (likewise), headers (UTF-8 text, or `{"base64": …}`), timestamp, origin, error,
//! attempts and when it failed. [`replay`] reads them back.
//!
//! Durability: [`DeadLetterSink::flush`] returns only once every buffered letter is
//! durable — the object written; the Kafka broker acknowledged it with `acks=all`; the
//! AMQP broker confirmed it (publisher confirms, persistent message, durable queue) — and
//! the pipeline calls it before the positions of those records are acknowledged, so a
//! record is either redelivered or in the destination. On error every letter stays
//! buffered and the next flush sends them all again.
//!
//! Identity: each letter's `id` is derived from its record's origin
//! (`kafka:<topic>/<partition>/<offset>`, `amqp:<queue>/<message_id>`, …). Sending letters
//! again — a failed flush retried, or the redo of an unfinished Kafka range after a crash
//! — rewrites the same object in a store, but adds a second message to a topic or queue:
//! those two destinations are at-least-once, and a message's Kafka key / AMQP
//! `message_id` is the letter's `id`, so duplicates can be recognised. (An AMQP record
//! without a `message_id` has no identity that survives redelivery; its letter's id uses
//! the source's sequence number.)
//!
//! Store naming: the dead letters of a Kafka range are one object named from the range,
//! `<topic>-<partition>-<first:020>-<last:020>.ndjson`, so writing the range again (a redo
//! after a crash) overwrites it instead of adding a second copy; the commit protocol lists
//! it in the range's intent ([`DeadLetterSink::planned_objects`]). Dead letters of other
//! splits go into `dead-<run id>-<seq:06>.ndjson` objects.

pub mod replay;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};
use sluice_connectors::dead_letter::{LetterPublisher, OutgoingLetter, PublishError};
use sluice_connectors::{Classify, Event, PositionRange, Retry, SplitId};

use crate::commit::names::range_stem;
use crate::output::store::{OutputLocation, StoreError, open_store};
use crate::spec::secret::Secrets;
use crate::spec::{DeadLetterSpec, JobSpec};

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
    #[error(
        "could not {verb} {count} dead letters to {destination}: {message}; their positions stay unacknowledged",
        verb = source.verb,
        destination = source.destination,
        message = source.message
    )]
    Publish { count: usize, source: PublishError },
}

/// Sending again can succeed when the store or broker was unreachable or slow, not when
/// the job's configuration is at fault.
impl Classify for DeadLetterError {
    fn retry(&self) -> Retry {
        match self {
            DeadLetterError::Write { .. } => Retry::Transient,
            // The broker's connector knows: credentials, a queue declared with other
            // settings are the user's to fix.
            DeadLetterError::Publish { source, .. } => source.retry(),
            DeadLetterError::Path { .. } => Retry::Permanent,
        }
    }
}

/// One rejected record and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    split: SplitId,
    /// Stable identity, derived from the record's origin (see the module docs).
    id: String,
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
                (&*h.name, value)
            })
            .collect();
        let id = event.origin.identity();
        Self {
            split: event.origin.split(),
            line: json!({
                "id": id,
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
            id,
        }
    }

    /// The letter's stable identity: the Kafka key / AMQP `message_id` it is sent with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Masks `secrets` in the letter's `error`; the payload, key and headers stay as they
    /// came (a dead letter keeps its record byte for byte, so it can be replayed).
    pub fn mask_error(&mut self, secrets: &Secrets) {
        if let Some(Value::String(error)) = self.line.get_mut("error")
            && let Cow::Owned(masked) = secrets.redact(error)
        {
            *error = masked;
        }
    }

    /// The letter as one JSON line (no newline).
    pub fn to_json_line(&self) -> String {
        self.line.to_string()
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
    let Some(DeadLetterSpec::Store { url }) = &spec.dead_letter else {
        // No store declared (the default, or a topic / queue destination): the default
        // location, which is also where the commit protocol looks for dead-letter
        // objects of earlier runs.
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

/// Buffers dead letters until the next commit, then makes them durable in the job's
/// destination (see the module docs).
pub struct DeadLetterSink {
    destination: Destination,
    pending: Vec<DeadLetter>,
    /// Masked in every letter's error ([`DeadLetter::mask_error`]).
    secrets: Secrets,
}

enum Destination {
    Store(StoreDestination),
    /// A topic or queue, through its connector.
    Broker(Box<dyn LetterPublisher>),
}

/// NDJSON objects under a store prefix.
struct StoreDestination {
    location: OutputLocation,
    file_stem: String,
    seq: u64,
}

impl DeadLetterSink {
    /// A sink writing NDJSON objects to `location` (see [`dead_letter_location`]);
    /// `run_id` names the objects of splits that are not Kafka partitions.
    pub fn new(location: OutputLocation, run_id: &str) -> Self {
        Self {
            destination: Destination::Store(StoreDestination {
                location,
                file_stem: format!("dead-{run_id}"),
                seq: 0,
            }),
            pending: Vec::new(),
            secrets: Secrets::default(),
        }
    }

    /// The sink of `spec`'s `[dead_letter]` destination: a topic or queue as declared
    /// (connected on the first flush), else objects at `location`.
    pub fn for_job(spec: &JobSpec, location: OutputLocation, run_id: &str) -> Self {
        let broker = spec.dead_letter.as_ref().and_then(DeadLetterSpec::broker);
        let destination = match broker {
            Some(broker) => Destination::Broker(broker.publisher(&spec.name)),
            None => Self::new(location, run_id).destination,
        };
        Self {
            destination,
            pending: Vec::new(),
            secrets: spec.secrets.clone(),
        }
    }

    /// Buffers `letter`, its error masked with the job's secrets.
    pub fn push(&mut self, mut letter: DeadLetter) {
        letter.mask_error(&self.secrets);
        self.pending.push(letter);
    }

    /// The object (as stored) each Kafka range with buffered dead letters will be written
    /// to by [`Self::flush`] with the same `ranges`: what a commit intent lists. Empty for
    /// a topic or queue, which have no objects to overwrite or delete.
    pub fn planned_objects(
        &self,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> BTreeMap<SplitId, String> {
        let Destination::Store(store) = &self.destination else {
            return BTreeMap::new();
        };
        let mut planned = BTreeMap::new();
        for letter in &self.pending {
            if planned.contains_key(&letter.split) {
                continue;
            }
            if let Some(name) = range_name(&letter.split, ranges)
                && let Ok(path) = store.location.object_path(&name)
            {
                planned.insert(letter.split.clone(), path.to_string());
            }
        }
        planned
    }

    /// Makes every buffered dead letter durable — in a store one object per Kafka range
    /// in `ranges` and one for the rest — and returns how many. On error they all stay
    /// buffered and the next flush sends them again (under the same names in a store).
    pub async fn flush(
        &mut self,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<usize, DeadLetterError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        match &mut self.destination {
            Destination::Store(store) => store.write(&self.pending, ranges).await?,
            Destination::Broker(publisher) => {
                let lines: Vec<String> =
                    self.pending.iter().map(DeadLetter::to_json_line).collect();
                let letters: Vec<OutgoingLetter<'_>> = self
                    .pending
                    .iter()
                    .zip(&lines)
                    .map(|(letter, line)| OutgoingLetter {
                        id: letter.id(),
                        line,
                    })
                    .collect();
                publisher
                    .publish(&letters)
                    .await
                    .map_err(|source| DeadLetterError::Publish {
                        count: letters.len(),
                        source,
                    })?;
            }
        }
        let count = self.pending.len();
        self.pending.clear();
        Ok(count)
    }
}

fn range_name(split: &SplitId, ranges: &BTreeMap<SplitId, PositionRange>) -> Option<String> {
    let range = ranges.get(split)?;
    range_stem(split, *range).map(|stem| format!("{stem}.ndjson"))
}

impl StoreDestination {
    async fn write(
        &mut self,
        letters: &[DeadLetter],
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<(), DeadLetterError> {
        let mut objects: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
        let unranged = format!("{}-{:06}.ndjson", self.file_stem, self.seq);
        for letter in letters {
            let name = range_name(&letter.split, ranges).unwrap_or_else(|| unranged.clone());
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_connectors::{Header, Origin};

    use super::*;
    use sluice_connectors::dead_letter::LetterBroker as _;
    use sluice_connectors::kafka::KafkaDeadLetterConfig;

    #[test]
    fn keeps_the_original_record_and_its_error() {
        let event = Event {
            payload: Bytes::from_static(b"\xff\x00"),
            key: Some(Bytes::from_static(b"user-1")),
            headers: vec![Header {
                name: "trace".into(),
                value: Some(Bytes::from_static(b"abc")),
            }]
            .into(),
            timestamp_ms: Some(1_700_000_000_000),
            origin: Origin::Kafka {
                topic: Arc::from("clicks"),
                partition: 2,
                offset: 41,
            },
            unreadable: None,
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
        assert_eq!(letter["id"], "kafka:clicks/2/41");
    }

    #[test]
    fn a_secret_is_masked_in_the_error_but_the_payload_stays_byte_for_byte() {
        let secret = "tok-51c0e7d2a94b";
        let payload = format!("{{\"token\":\"{secret}\",\"raw\":\"a\\u0000b\"}}\n");
        let event = Event::from_payload(payload.clone(), Origin::Sample { line: 3 });
        let mut secrets = Secrets::default();
        secrets.insert(secret);
        let dir = tempfile::tempdir().unwrap();
        let location = open_store(
            &format!("file://{}", dir.path().display()),
            &BTreeMap::new(),
        )
        .unwrap();
        let mut sink = DeadLetterSink::new(location, "run");
        sink.secrets = secrets;
        sink.push(DeadLetter::new(
            &event,
            &format!("rejected: token {secret} is expired"),
            1,
        ));
        let letter = &sink.pending[0].line;
        assert_eq!(letter["error"], "rejected: token *** is expired");
        assert_eq!(
            letter["payload"].as_str().unwrap().as_bytes(),
            payload.as_bytes()
        );
        assert_eq!(letter["payload_encoding"], "utf8");
    }

    #[test]
    fn a_topic_or_queue_destination_plans_no_objects() {
        let spec = KafkaDeadLetterConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "dead".into(),
            group: "g".into(),
            options: BTreeMap::new(),
        };
        let mut sink = DeadLetterSink {
            destination: Destination::Broker(spec.publisher("job")),
            pending: Vec::new(),
            secrets: Secrets::default(),
        };
        let event = Event {
            payload: Bytes::from_static(b"{}"),
            key: None,
            headers: Arc::default(),
            timestamp_ms: None,
            origin: Origin::Kafka {
                topic: Arc::from("clicks"),
                partition: 0,
                offset: 5,
            },
            unreadable: None,
        };
        sink.push(DeadLetter::new(&event, "bad", 1));
        let ranges = BTreeMap::from([(
            SplitId::kafka("clicks", 0),
            PositionRange { first: 0, last: 9 },
        )]);
        assert!(sink.planned_objects(&ranges).is_empty());
    }
}
