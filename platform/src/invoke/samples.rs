//! Sample input for `sluice invoke`, read the way the job's trigger reads its source.
//!
//! - Samples go through the bucket connector's object reader ([`read_records`]) with the
//!   format and compression the trigger reads with (`Trigger::sample_format`), resolved
//!   from the sample file's name as they would be from an object's key: for a bucket
//!   trigger CSV rows, JSON arrays, lines, gzip and zstd all come out as they would in
//!   production; broker triggers (Kafka, AMQP) take one message payload per non-blank
//!   line, a `.gz`/`.zst` file decompressed first.
//! - Input from stdin has no name: its compression is recognised by its magic bytes.
//! - Envelope samples: a line that is an object of envelope fields
//!   (`{"value", "key", "headers", "timestamp_ms", …}`, as the function sees them with
//!   `function.input = "envelope"`) becomes a message with that key, headers and
//!   timestamp. Lines are read so when `envelopes` is asked for, or when the job's input is
//!   `envelope` and the line has that shape.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use sluice_connectors::bucket::InputCompression;
use sluice_connectors::bucket::reader::{Record, read_records, resolve};
use sluice_connectors::{Event, Header, Origin};

use crate::spec::{InputMode, JobSpec};

/// Fields of an envelope line; a sample object with only these (and `value`) is one.
const ENVELOPE_FIELDS: &[&str] = &[
    "value",
    "value_encoding",
    "key",
    "key_encoding",
    "headers",
    "timestamp_ms",
    "origin",
];

/// Why sample input could not be turned into events.
#[derive(Debug, thiserror::Error)]
pub enum SampleInputError {
    #[error("sample input, {0}")]
    Read(#[from] sluice_connectors::bucket::reader::ReadError),
    #[error("sample line {line} is not an envelope: {reason}")]
    Envelope { line: u64, reason: String },
}

/// Where sample bytes came from and how to read them.
#[derive(Debug, Clone, Default)]
pub struct SampleSource<'a> {
    /// The sample file's name (its suffixes choose format and compression); None for stdin.
    pub name: Option<&'a str>,
    /// Every line is an envelope (key, headers, timestamp), whatever the job's input.
    pub envelopes: bool,
}

/// The events a job's trigger would produce from `input`, one origin line each.
pub fn read_samples(
    spec: &JobSpec,
    source: &SampleSource<'_>,
    input: &[u8],
) -> Result<Vec<Event>, SampleInputError> {
    let (format, compression) = spec.trigger.sample_format();
    let (format, mut compression) = resolve(source.name.unwrap_or(""), format, compression);
    if source.name.is_none() && compression == InputCompression::None {
        compression = sniff_compression(input);
    }
    let mut records = Vec::new();
    read_records(input, format, compression, &mut |line, payload| {
        records.push((line, payload));
        true
    })?;
    let envelopes = source.envelopes || spec.function.input == InputMode::Envelope;
    records
        .into_iter()
        .map(|(line, record)| {
            let origin = Origin::Sample { line };
            let payload = match record {
                Record::Read(payload) => payload,
                // Damage the reader found: a dead letter, as `run` makes it.
                Record::Unreadable { payload, reason } => {
                    let mut event = Event::from_payload(payload, origin);
                    event.unreadable = Some(reason.into());
                    return Ok(event);
                }
            };
            match envelope_line(&payload, source.envelopes, envelopes) {
                Some(fields) => from_envelope(fields, origin)
                    .map_err(|reason| SampleInputError::Envelope { line, reason }),
                None => Ok(Event::from_payload(payload, origin)),
            }
        })
        .collect()
}

fn sniff_compression(input: &[u8]) -> InputCompression {
    match input {
        [0x1f, 0x8b, ..] => InputCompression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => InputCompression::Zstd,
        _ => InputCompression::None,
    }
}

/// The line's fields when it is to be read as an envelope.
fn envelope_line(
    payload: &[u8],
    required: bool,
    allowed: bool,
) -> Option<serde_json::Map<String, Value>> {
    if !allowed {
        return None;
    }
    let parsed = serde_json::from_slice::<Value>(payload).ok();
    match parsed {
        Some(Value::Object(fields))
            if required
                || (fields.contains_key("value")
                    && fields
                        .keys()
                        .all(|key| ENVELOPE_FIELDS.contains(&key.as_str()))) =>
        {
            Some(fields)
        }
        // `required`: let `from_envelope` say what is wrong with it
        _ if required => Some(serde_json::Map::new()),
        _ => None,
    }
}

fn from_envelope(fields: serde_json::Map<String, Value>, origin: Origin) -> Result<Event, String> {
    let value = fields
        .get("value")
        .ok_or("expected a JSON object with a \"value\" field")?;
    let payload = decode(value, fields.get("value_encoding"), "value")?;
    let key = match fields.get("key") {
        None | Some(Value::Null) => None,
        Some(key) => Some(decode(key, fields.get("key_encoding"), "key")?),
    };
    let headers = match fields.get("headers") {
        None | Some(Value::Null) => Arc::default(),
        Some(Value::Object(headers)) => headers
            .iter()
            .map(|(name, value)| header(name, value))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"headers\" must be an object of name → string".to_owned()),
    };
    let timestamp_ms = match fields.get("timestamp_ms") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
        Some(_) => {
            return Err(
                "\"timestamp_ms\" must be an integer (milliseconds since the epoch)".to_owned(),
            );
        }
    };
    Ok(Event {
        payload,
        key,
        headers,
        timestamp_ms,
        origin,
        unreadable: None,
    })
}

/// A value or key in the given encoding (`json` default for values, `utf8` for keys).
fn decode(value: &Value, encoding: Option<&Value>, what: &str) -> Result<Bytes, String> {
    match (encoding.and_then(Value::as_str), value) {
        (Some("base64"), Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|error| format!("\"{what}\" is not valid base64: {error}")),
        (Some("base64"), _) => Err(format!("\"{what}\" in base64 must be a string")),
        (Some("utf8"), Value::String(text)) => Ok(Bytes::from(text.clone())),
        (Some("utf8"), _) => Err(format!("\"{what}\" in utf8 must be a string")),
        (None, Value::String(text)) if what == "key" => Ok(Bytes::from(text.clone())),
        (None | Some("json"), value) => Ok(Bytes::from(value.to_string())),
        (Some(other), _) => Err(format!(
            "unknown {what}_encoding {other:?}; allowed: \"json\", \"utf8\", \"base64\""
        )),
    }
}

fn header(name: &str, value: &Value) -> Result<Header, String> {
    let value = match value {
        Value::Null => None,
        Value::String(text) => Some(Bytes::from(text.clone())),
        Value::Object(binary) if binary.len() == 1 && binary.contains_key("$binary") => Some(
            decode(&binary["$binary"], Some(&Value::from("base64")), "headers")?,
        ),
        _ => {
            return Err(format!(
                "header {name:?} must be a string, null or {{\"$binary\": \"<base64>\"}}"
            ));
        }
    };
    Ok(Header {
        name: Arc::from(name),
        value,
    })
}
