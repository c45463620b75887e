//! Turning a batch of events into the function's stdin: NDJSON, one line per event.
//!
//! Invariants of [`encode_batch`]'s output, relied on by the runtime and by function authors:
//! - exactly one line per event, in batch order, each ending in `\n`;
//! - no line is empty and no line contains a `\n` or `\r` before its end, so a stream-mode
//!   function can treat the first empty line as the end of the batch;
//! - every line is one valid JSON value in UTF-8.
//!
//! `value` mode (the common ETL case) writes a JSON payload as it came, without building a
//! `serde_json::Value`: the payload is validated in place, in one pass (`json_check`), and
//! copied; only a payload with a raw line break in it (pretty-printed JSON) is rewritten, by
//! dropping the whitespace between tokens, which leaves every string, number and key order
//! untouched. A payload that is not JSON becomes a JSON string when it is UTF-8, else
//! `{"$binary":"<base64>"}`.
//!
//! `envelope` mode wraps each payload with its metadata; see `docs/function-protocol.md`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sluice_connectors::{Event, Origin};

use super::json_check::is_json;
use crate::spec::InputMode;

/// A batch ready to be written to a function's stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    /// NDJSON: one line per record, each ending in `\n`.
    pub bytes: Vec<u8>,
    /// How many records (lines) `bytes` holds; `$error` record indexes are below this.
    pub records: usize,
}

/// Encodes `events` as NDJSON, one line per event, in order.
pub fn encode_batch(events: &[Event], mode: InputMode) -> EncodedBatch {
    let payload_bytes: usize = events.iter().map(|event| event.payload.len() + 1).sum();
    let mut bytes = Vec::with_capacity(match mode {
        InputMode::Value => payload_bytes,
        InputMode::Envelope => payload_bytes + events.len() * 160,
    });
    for event in events {
        match mode {
            InputMode::Value => push_value_line(&mut bytes, &event.payload),
            InputMode::Envelope => push_envelope_line(&mut bytes, event),
        }
        bytes.push(b'\n');
    }
    EncodedBatch {
        bytes,
        records: events.len(),
    }
}

/// What a payload is, decided once per record.
enum PayloadKind<'a> {
    /// Valid JSON, surrounding whitespace trimmed.
    Json(&'a [u8]),
    /// Not JSON, but UTF-8 text.
    Text(&'a str),
    /// Neither.
    Binary,
}

fn classify(payload: &[u8]) -> PayloadKind<'_> {
    // The common case first: JSON, UTF-8 checked and the grammar walked in one pass,
    // without allocating.
    if is_json(payload) {
        return PayloadKind::Json(payload.trim_ascii());
    }
    match std::str::from_utf8(payload) {
        Ok(text) => PayloadKind::Text(text),
        Err(_) => PayloadKind::Binary,
    }
}

fn push_value_line(out: &mut Vec<u8>, payload: &[u8]) {
    match classify(payload) {
        PayloadKind::Json(json) => push_json_single_line(out, json),
        PayloadKind::Text(text) => push_json_string(out, text),
        PayloadKind::Binary => {
            out.extend_from_slice(b"{\"$binary\":\"");
            push_base64(out, payload);
            out.extend_from_slice(b"\"}");
        }
    }
}

fn push_envelope_line(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(b"{\"value\":");
    let value_encoding: &[u8] = match classify(&event.payload) {
        PayloadKind::Json(json) => {
            push_json_single_line(out, json);
            b"json"
        }
        PayloadKind::Text(text) => {
            push_json_string(out, text);
            b"utf8"
        }
        PayloadKind::Binary => {
            out.push(b'"');
            push_base64(out, &event.payload);
            out.push(b'"');
            b"base64"
        }
    };
    out.extend_from_slice(b",\"value_encoding\":\"");
    out.extend_from_slice(value_encoding);
    out.extend_from_slice(b"\",\"key\":");
    match event.key.as_deref() {
        None => out.extend_from_slice(b"null,\"key_encoding\":null"),
        Some(key) => match std::str::from_utf8(key) {
            Ok(text) => {
                push_json_string(out, text);
                out.extend_from_slice(b",\"key_encoding\":\"utf8\"");
            }
            Err(_) => {
                out.push(b'"');
                push_base64(out, key);
                out.extend_from_slice(b"\",\"key_encoding\":\"base64\"");
            }
        },
    }
    out.extend_from_slice(b",\"headers\":{");
    for (index, header) in event.headers.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        push_json_string(out, &header.name);
        out.push(b':');
        match header.value.as_deref() {
            None => out.extend_from_slice(b"null"),
            Some(value) => match std::str::from_utf8(value) {
                Ok(text) => push_json_string(out, text),
                Err(_) => {
                    out.extend_from_slice(b"{\"$binary\":\"");
                    push_base64(out, value);
                    out.extend_from_slice(b"\"}");
                }
            },
        }
    }
    out.extend_from_slice(b"},\"timestamp_ms\":");
    match event.timestamp_ms {
        Some(timestamp) => out.extend_from_slice(timestamp.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"origin\":");
    push_origin(out, &event.origin);
    out.push(b'}');
}

/// The origin as `Origin::to_json` renders it (also used in dead letters), so every
/// connector's origin reaches functions the same way.
fn push_origin(out: &mut Vec<u8>, origin: &Origin) {
    out.extend_from_slice(origin.to_json().to_string().as_bytes());
}

/// Copies validated JSON, dropping whitespace between tokens when it holds a line break.
/// JSON forbids raw control characters inside strings, so any `\n`/`\r` byte is whitespace
/// between tokens and may go; string contents are copied byte for byte.
fn push_json_single_line(out: &mut Vec<u8>, json: &[u8]) {
    if memchr::memchr2(b'\n', b'\r', json).is_none() {
        out.extend_from_slice(json);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(byte);
            if byte == b'"' {
                in_string = true;
            }
        }
    }
}

/// Writes `text` as a JSON string literal.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut copied = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[copied..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        } else {
            out.extend_from_slice(escape);
        }
        copied = index + 1;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(BASE64.encode(bytes).as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::{Value, json};
    use sluice_connectors::Header;

    use super::*;

    fn sample(payload: &[u8]) -> Event {
        Event::from_payload(Bytes::copy_from_slice(payload), Origin::Sample { line: 1 })
    }

    fn lines(batch: &EncodedBatch) -> Vec<&str> {
        let text = std::str::from_utf8(&batch.bytes).expect("encoded batch is UTF-8");
        assert!(text.ends_with('\n'), "every line ends in a newline");
        text[..text.len() - 1].split('\n').collect()
    }

    fn value_line(payload: &[u8]) -> String {
        let batch = encode_batch(&[sample(payload)], InputMode::Value);
        assert_eq!(batch.records, 1);
        let lines = lines(&batch);
        assert_eq!(lines.len(), 1);
        lines[0].to_owned()
    }

    #[test]
    fn json_payloads_pass_verbatim() {
        // Key order, number spelling and duplicate-free copying are all preserved.
        let payload = br#"{"z":1,"a":1.50,"big":123456789012345678901234567890,"s":"x\ny"}"#;
        assert_eq!(value_line(payload), std::str::from_utf8(payload).unwrap());
        assert_eq!(value_line(b"42"), "42");
        assert_eq!(value_line(b"[1,2]"), "[1,2]");
        assert_eq!(value_line(b"\"quoted\""), "\"quoted\"");
        // A trailing newline from the producer is trimmed, not turned into an empty line.
        assert_eq!(value_line(b"{\"a\":1}\n"), "{\"a\":1}");
    }

    #[test]
    fn multi_line_json_is_compacted_without_touching_strings() {
        let payload =
            b"{\n  \"a\" : \"two  spaces\\n\",\r\n  \"b\": [1, 2,\n 3],\n \"c\\\"\": \"q\"\n}\n";
        let line = value_line(payload);
        assert_eq!(line, r#"{"a":"two  spaces\n","b":[1,2,3],"c\"":"q"}"#);
        let reparsed: Value = serde_json::from_str(&line).unwrap();
        let original: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(reparsed, original);
    }

    #[test]
    fn text_payloads_become_json_strings() {
        assert_eq!(value_line(b"hello world"), r#""hello world""#);
        assert_eq!(
            value_line(b"line one\nline \"two\"\t\x01"),
            r#""line one\nline \"two\"\t\u0001""#
        );
        assert_eq!(value_line(b"{not json"), r#""{not json""#);
        assert_eq!(value_line("héllo ☃".as_bytes()), "\"héllo ☃\"");
        // An empty payload is an empty string, never an empty line.
        assert_eq!(value_line(b""), r#""""#);
        assert_eq!(value_line(b"  \n"), r#""  \n""#);
    }

    #[test]
    fn binary_payloads_become_base64_objects() {
        let payload = [0xff, 0x00, 0xfe, b'\n'];
        let line = value_line(&payload);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        let encoded = parsed["$binary"].as_str().unwrap();
        assert_eq!(BASE64.decode(encoded).unwrap(), payload);
        // Invalid UTF-8 inside an otherwise JSON-looking payload is binary too.
        let line = value_line(b"{\"a\":\"\xff\"}");
        assert!(line.starts_with("{\"$binary\":"), "{line}");
    }

    #[test]
    fn one_line_per_event_in_order() {
        let events = [
            sample(b"{\"n\":1}"),
            sample(b"plain"),
            sample(b"{\n\"n\":3\n}"),
            sample(&[0x80]),
        ];
        let batch = encode_batch(&events, InputMode::Value);
        assert_eq!(batch.records, 4);
        let lines = lines(&batch);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "{\"n\":1}");
        assert_eq!(lines[1], "\"plain\"");
        assert_eq!(lines[2], "{\"n\":3}");
        assert!(
            lines
                .iter()
                .all(|line| !line.is_empty() && !line.contains('\r'))
        );
        assert_eq!(encode_batch(&[], InputMode::Value), EncodedBatch::default());
    }

    #[test]
    fn envelope_carries_payload_and_metadata() {
        let kafka = Origin::Kafka {
            topic: Arc::from("clicks"),
            partition: 2,
            offset: 41,
        };
        let events = [
            Event {
                payload: Bytes::from_static(b"{\"a\": [1,\n2]}"),
                key: Some(Bytes::from_static(b"user-7")),
                headers: vec![
                    Header {
                        name: "trace".into(),
                        value: Some(Bytes::from_static(b"abc")),
                    },
                    Header {
                        name: "empty".into(),
                        value: None,
                    },
                    Header {
                        name: "raw".into(),
                        value: Some(Bytes::from_static(&[0xff])),
                    },
                ]
                .into(),
                timestamp_ms: Some(1_700_000_000_123),
                origin: kafka,
                unreadable: None,
            },
            Event {
                payload: Bytes::from_static(b"not json"),
                key: Some(Bytes::from_static(&[0x00, 0xff])),
                headers: Arc::default(),
                timestamp_ms: None,
                origin: Origin::Sample { line: 9 },
                unreadable: None,
            },
            sample(&[0xff, 0xfe]),
        ];
        let batch = encode_batch(&events, InputMode::Envelope);
        assert_eq!(batch.records, 3);
        let parsed: Vec<Value> = lines(&batch)
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            parsed[0],
            json!({
                "value": {"a": [1, 2]},
                "value_encoding": "json",
                "key": "user-7",
                "key_encoding": "utf8",
                "headers": {"trace": "abc", "empty": null, "raw": {"$binary": "/w=="}},
                "timestamp_ms": 1_700_000_000_123_i64,
                "origin": {"topic": "clicks", "partition": 2, "offset": 41},
            })
        );
        assert_eq!(
            parsed[1],
            json!({
                "value": "not json",
                "value_encoding": "utf8",
                "key": "AP8=",
                "key_encoding": "base64",
                "headers": {},
                "timestamp_ms": null,
                "origin": {"line": 9},
            })
        );
        assert_eq!(parsed[2]["value"], json!("//4="));
        assert_eq!(parsed[2]["value_encoding"], json!("base64"));
        assert_eq!(parsed[2]["key"], Value::Null);
        assert_eq!(parsed[2]["key_encoding"], Value::Null);
    }

    #[test]
    fn envelope_origin_of_amqp_events_matches_its_json() {
        for message_id in [Some("m-\"1\"".to_owned()), None] {
            let origin = Origin::Amqp {
                queue: Arc::from("orders"),
                seq: 12,
                delivery_tag: 3,
                message_id,
                exchange: "amq.topic".into(),
                routing_key: "order.eu".into(),
                redelivered: true,
            };
            let event = Event::from_payload(Bytes::from_static(b"{}"), origin.clone());
            let batch = encode_batch(&[event], InputMode::Envelope);
            let parsed: Value = serde_json::from_str(lines(&batch)[0]).unwrap();
            assert_eq!(parsed["origin"], origin.to_json());
            assert_eq!(parsed["origin"]["seq"], 12);
        }
    }
}
