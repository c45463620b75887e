//! Turning one object's bytes into records, streamed: never the whole object in memory
//! (except `raw`, whose one record is the object).
//!
//! | format | records |
//! |---|---|
//! | `lines` | one per non-empty line (NDJSON or text); `\r\n` accepted; a line that is not UTF-8 is a record like any other (its bytes, which the function sees as `{"$binary": …}`, as Kafka payloads) |
//! | `csv` | one per row after the header row, as a JSON object `{header: value}` of strings |
//! | `json` | the elements of a top-level array, or the one top-level object |
//! | `raw` | one record: the object's bytes |
//!
//! Compression `gzip` (`.gz`) and `zstd` (`.zst`, `.zstd`) is undone first; `auto` picks
//! by the key's suffix, and `format = "auto"` picks `csv` for `.csv`, `json` for `.json`
//! and `lines` otherwise (after removing a compression suffix).
//!
//! Bad data never stops an object silently. A record that cannot be read is handed on as
//! [`Record::Unreadable`] with its line, its bytes and the reason, and reading goes on:
//! a CSV row whose field count differs from the header's (or that is not UTF-8), every
//! row under an unreadable header. Damage that ends the readable part — a truncated or
//! corrupt gzip/zstd stream, invalid JSON in a `json` object — is one unreadable record
//! (what was decoded of its line, and the reason); the records before it are read. Only
//! the store failing (the object cannot be fetched, the connection breaks) is a
//! [`ReadError`]: nothing about the data is known, so the object is read again later.
//!
//! Runs on a blocking thread: decompressors and the CSV parser are synchronous readers.

use std::cell::Cell;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;

use bytes::Bytes;
use serde::de::{Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// How an object's content becomes records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Auto,
    Lines,
    Csv,
    Json,
    Raw,
}

/// How an object's content is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputCompression {
    Auto,
    None,
    Gzip,
    Zstd,
}

/// One record of an object, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The record's payload.
    Read(Bytes),
    /// A record that cannot be read: the bytes there are (the raw row, or what was
    /// decoded before the damage) and why. It goes to the dead letters, not the function.
    Unreadable { payload: Bytes, reason: String },
}

/// The store failed while an object was read (not its content); `line` is 1-based where
/// known. Reading the object again later may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ReadError {
    pub line: Option<u64>,
    pub message: String,
    /// The object does not exist (never did, or was deleted before it was read).
    pub missing: bool,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The compression and format an object gets, from the configured choices and its key.
pub fn resolve(
    key: &str,
    format: InputFormat,
    compression: InputCompression,
) -> (InputFormat, InputCompression) {
    let lower = key.to_ascii_lowercase();
    let compression = match compression {
        InputCompression::Auto if lower.ends_with(".gz") => InputCompression::Gzip,
        InputCompression::Auto if lower.ends_with(".zst") || lower.ends_with(".zstd") => {
            InputCompression::Zstd
        }
        InputCompression::Auto => InputCompression::None,
        other => other,
    };
    let stem = lower
        .trim_end_matches(".gz")
        .trim_end_matches(".zstd")
        .trim_end_matches(".zst");
    let format = match format {
        InputFormat::Auto if stem.ends_with(".csv") => InputFormat::Csv,
        InputFormat::Auto if stem.ends_with(".json") => InputFormat::Json,
        InputFormat::Auto => InputFormat::Lines,
        other => other,
    };
    (format, compression)
}

/// Reads records from `input`, calling `emit(line, record)` for each (line = the 1-based
/// line the record starts on for `lines`/`csv`, the element index for `json`, 1 for
/// `raw`). Damaged content becomes [`Record::Unreadable`] records (see the module docs);
/// an error reading `input` itself stops the read with a [`ReadError`], after the records
/// before it were emitted. `emit` returns false to stop early (the consumer went away).
pub fn read_records(
    input: impl Read,
    format: InputFormat,
    compression: InputCompression,
    emit: &mut dyn FnMut(u64, Record) -> bool,
) -> Result<(), ReadError> {
    let store_failure = Rc::new(Cell::new(false));
    let input = Tracked {
        inner: input,
        failed: store_failure.clone(),
    };
    let next_line = Cell::new(1);
    let mut counted = |line: u64, record: Record| {
        next_line.set(line + 1);
        emit(line, record)
    };
    match read_decompressed(input, format, compression, &mut counted) {
        Ok(()) => Ok(()),
        Err(damage) if store_failure.get() => Err(damage.into()),
        // The data is damaged: what was read before is out, the damage is one record.
        Err(Damage {
            line,
            partial,
            message,
        }) => {
            let line = line.unwrap_or(next_line.get());
            counted(
                line,
                Record::Unreadable {
                    payload: partial,
                    reason: format!("the object is damaged at line {line}: {message}"),
                },
            );
            Ok(())
        }
    }
}

/// What stopped a read: the store (a [`ReadError`] for the caller) or damaged data.
struct Damage {
    line: Option<u64>,
    /// What was decoded of the damaged record.
    partial: Bytes,
    message: String,
}

impl From<Damage> for ReadError {
    fn from(damage: Damage) -> Self {
        Self {
            line: damage.line,
            message: damage.message,
            missing: false,
        }
    }
}

/// Remembers whether the underlying input (the store) failed, so a failed read can be
/// told apart from damaged content found by a decompressor or parser.
struct Tracked<R> {
    inner: R,
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed.set(true))
    }
}

fn read_decompressed(
    input: impl Read,
    format: InputFormat,
    compression: InputCompression,
    emit: &mut dyn FnMut(u64, Record) -> bool,
) -> Result<(), Damage> {
    let decompressed: Box<dyn Read> = match compression {
        InputCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        InputCompression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(input).map_err(|e| Damage::io(&e, None, &[]))?,
        ),
        InputCompression::None | InputCompression::Auto => Box::new(input),
    };
    match format {
        InputFormat::Lines | InputFormat::Auto => read_lines(decompressed, emit),
        InputFormat::Csv => read_csv(decompressed, emit),
        InputFormat::Json => read_json(decompressed, emit),
        InputFormat::Raw => {
            let mut body = Vec::new();
            BufReader::new(decompressed)
                .read_to_end(&mut body)
                .map_err(|e| Damage::io(&e, Some(1), &body))?;
            emit(1, Record::Read(Bytes::from(body)));
            Ok(())
        }
    }
}

impl Damage {
    fn io(error: &std::io::Error, line: Option<u64>, partial: &[u8]) -> Self {
        Self {
            line,
            partial: Bytes::copy_from_slice(partial),
            message: format!("reading the object failed: {error}"),
        }
    }
}

fn read_lines(input: impl Read, emit: &mut dyn FnMut(u64, Record) -> bool) -> Result<(), Damage> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Damage::io(&e, Some(number), &line))?;
        if read == 0 {
            return Ok(());
        }
        let mut content = line.as_slice();
        content = content.strip_suffix(b"\n").unwrap_or(content);
        content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !emit(number, Record::Read(Bytes::copy_from_slice(content))) {
            return Ok(());
        }
    }
}

fn read_csv(input: impl Read, emit: &mut dyn FnMut(u64, Record) -> bool) -> Result<(), Damage> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let csv_damage = |error: csv::Error, record: &csv::ByteRecord| {
        let line = error.position().map(csv::Position::line);
        Damage {
            line,
            partial: Bytes::from(row_text(record)),
            message: error.to_string(),
        }
    };
    let mut record = csv::ByteRecord::new();
    // The header row: its names, or why it cannot name the fields of the rows below.
    let headers: Result<Vec<String>, String> = match reader.read_byte_record(&mut record) {
        Ok(false) => return Ok(()),
        Ok(true) => record
            .iter()
            .map(|name| String::from_utf8(name.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|_| "the header row is not valid UTF-8".to_owned()),
        Err(error) => return Err(csv_damage(error, &record)),
    };
    if let Err(reason) = &headers {
        let line = record.position().map_or(1, csv::Position::line);
        let header = Record::Unreadable {
            payload: Bytes::from(row_text(&record)),
            reason: reason.clone(),
        };
        if !emit(line, header) {
            return Ok(());
        }
    }
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                let row = match &headers {
                    Ok(headers) => csv_object(headers, &record),
                    Err(_) => Err("the header row cannot be read, so no row can".to_owned()),
                };
                let row = match row {
                    Ok(object) => Record::Read(Bytes::from(object)),
                    Err(reason) => Record::Unreadable {
                        payload: Bytes::from(row_text(&record)),
                        reason: format!("line {line}: {reason}"),
                    },
                };
                if !emit(line, row) {
                    return Ok(());
                }
            }
            Err(error) => return Err(csv_damage(error, &record)),
        }
    }
}

/// One CSV row as the JSON object `{header: value}`, or why it cannot be one.
fn csv_object(headers: &[String], record: &csv::ByteRecord) -> Result<String, String> {
    if record.len() != headers.len() {
        return Err(format!(
            "row has {} fields but the header has {}",
            record.len(),
            headers.len()
        ));
    }
    let mut object = serde_json::Map::with_capacity(headers.len());
    for (index, (name, value)) in headers.iter().zip(record.iter()).enumerate() {
        let value = std::str::from_utf8(value)
            .map_err(|_| format!("field {} ({name:?}) is not valid UTF-8", index + 1))?;
        object.insert(name.clone(), Value::String(value.to_owned()));
    }
    Ok(Value::Object(object).to_string())
}

/// A row written back as CSV text, for the dead letter of a row that cannot be read.
fn row_text(record: &csv::ByteRecord) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if record.is_empty() || writer.write_byte_record(record).is_err() {
        return Vec::new();
    }
    let mut text = writer.into_inner().unwrap_or_default();
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    text
}

fn read_json(input: impl Read, emit: &mut dyn FnMut(u64, Record) -> bool) -> Result<(), Damage> {
    let mut deserializer = serde_json::Deserializer::from_reader(BufReader::new(input));
    let mut visitor = Elements {
        emit,
        emitted: 0,
        stopped: false,
    };
    let invalid = |e: serde_json::Error, what: &str, element: u64| Damage {
        // The record is the element that could not be read; the position is in the text.
        line: Some(element),
        partial: Bytes::new(),
        message: format!(
            "{what} (text line {}, column {}): {e}",
            e.line(),
            e.column()
        ),
    };
    if let Err(e) = deserializer.deserialize_any(&mut visitor) {
        let next = visitor.emitted + 1;
        return Err(invalid(e, "invalid JSON", next));
    }
    if visitor.stopped {
        return Ok(());
    }
    let next = visitor.emitted + 1;
    deserializer
        .end()
        .map_err(|e| invalid(e, "content after the JSON document", next))
}

/// Emits the elements of a top-level array one by one, or a top-level object whole.
struct Elements<'a> {
    emit: &'a mut dyn FnMut(u64, Record) -> bool,
    emitted: u64,
    stopped: bool,
}

impl<'de> Visitor<'de> for &mut Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records or one JSON object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<Value>()? {
            self.emitted += 1;
            let record = Record::Read(Bytes::from(element.to_string()));
            if !(self.emit)(self.emitted, record) {
                self.stopped = true;
                // Drain without emitting: serde needs the sequence consumed.
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                return Ok(());
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let object: serde_json::Map<String, Value> =
            serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.emitted = 1;
        (self.emit)(
            1,
            Record::Read(Bytes::from(Value::Object(object).to_string())),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// `(line, text)` of each record; unreadable ones as `!reason|payload`.
    fn records(
        bytes: &[u8],
        format: InputFormat,
        compression: InputCompression,
    ) -> Result<Vec<(u64, String)>, ReadError> {
        let mut out = Vec::new();
        read_records(bytes, format, compression, &mut |line, record| {
            let text = match record {
                Record::Read(payload) => String::from_utf8_lossy(&payload).into_owned(),
                Record::Unreadable { payload, reason } => {
                    format!("!{reason}|{}", String::from_utf8_lossy(&payload))
                }
            };
            out.push((line, text));
            true
        })?;
        Ok(out)
    }

    fn unreadable(got: &[(u64, String)]) -> Vec<&(u64, String)> {
        got.iter()
            .filter(|(_, text)| text.starts_with('!'))
            .collect()
    }

    #[test]
    fn lines_skip_blanks_and_accept_crlf() {
        let got = records(
            b"{\"a\":1}\r\n\n{\"a\":2}\nlast",
            InputFormat::Lines,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                (1, "{\"a\":1}".into()),
                (3, "{\"a\":2}".into()),
                (4, "last".into())
            ]
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_record_and_the_rest_follows() {
        let mut got = Vec::new();
        read_records(
            &b"ok\n\xff\xfe\nafter\n"[..],
            InputFormat::Lines,
            InputCompression::None,
            &mut |line, record| {
                got.push((line, record));
                true
            },
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                (1, Record::Read(Bytes::from_static(b"ok"))),
                (2, Record::Read(Bytes::from_static(b"\xff\xfe"))),
                (3, Record::Read(Bytes::from_static(b"after"))),
            ]
        );
    }

    #[test]
    fn csv_rows_become_objects_and_ragged_rows_are_unreadable_records() {
        let got = records(
            b"id,name\n1,\"a, b\"\n2,c\n",
            InputFormat::Csv,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(got[0], (2, r#"{"id":"1","name":"a, b"}"#.into()));
        assert_eq!(got[1], (3, r#"{"id":"2","name":"c"}"#.into()));
        let got = records(
            b"id,name\n1,a\n2\n3,x,\"y,z\"\n4,\xff\n5,e\n",
            InputFormat::Csv,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], (2, r#"{"id":"1","name":"a"}"#.into()));
        assert_eq!(
            got[1],
            (3, "!line 3: row has 1 fields but the header has 2|2".into())
        );
        assert_eq!(
            got[2],
            (
                4,
                "!line 4: row has 3 fields but the header has 2|3,x,\"y,z\"".into()
            )
        );
        assert_eq!(got[3].0, 5);
        assert!(
            got[3].1.contains("field 2 (\"name\") is not valid UTF-8"),
            "{got:?}"
        );
        assert_eq!(got[4], (6, r#"{"id":"5","name":"e"}"#.into()));
    }

    #[test]
    fn an_unreadable_csv_header_makes_every_row_unreadable() {
        let got = records(
            b"id,\xff\n1,a\n2,b\n",
            InputFormat::Csv,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(unreadable(&got).len(), 3, "{got:?}");
        assert_eq!(got[2].0, 3);
        assert!(got[2].1.ends_with("|2,b"), "{got:?}");
    }

    #[test]
    fn json_arrays_stream_their_elements_and_damage_is_one_record() {
        let got = records(
            br#"[{"a":1},{"a":2}]"#,
            InputFormat::Json,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![(1, r#"{"a":1}"#.into()), (2, r#"{"a":2}"#.into())]
        );
        let got = records(
            br#" {"a": [1, 2]} "#,
            InputFormat::Json,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(got, vec![(1, r#"{"a":[1,2]}"#.into())]);
        let got = records(
            b"[{\"a\":1}, oops]",
            InputFormat::Json,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, 2);
        assert!(
            got[1]
                .1
                .starts_with("!the object is damaged at line 2: invalid JSON"),
            "{got:?}"
        );
        let got = records(b"42", InputFormat::Json, InputCompression::None).unwrap();
        assert_eq!(unreadable(&got).len(), 1, "{got:?}");
    }

    #[test]
    fn raw_is_one_record() {
        let got = records(b"\x00\x01binary", InputFormat::Raw, InputCompression::None);
        assert_eq!(got.unwrap().len(), 1);
    }

    #[test]
    fn truncated_gzip_and_zstd_keep_what_is_before_the_damage() {
        let text: String = (1..=2000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(text.as_bytes(), 1).unwrap();
        for (name, whole, compression) in [
            ("gzip", &gz, InputCompression::Gzip),
            ("zstd", &zst, InputCompression::Zstd),
        ] {
            assert_eq!(
                records(whole, InputFormat::Lines, compression)
                    .unwrap()
                    .len(),
                2000,
                "{name}"
            );
            for cut in [whole.len() / 2, whole.len() - 6, 5] {
                let got = records(&whole[..cut], InputFormat::Lines, compression).unwrap();
                let damaged = unreadable(&got);
                assert_eq!(damaged.len(), 1, "{name} cut at {cut}: {got:?}");
                let (line, text) = got.last().unwrap();
                assert!(text.contains("the object is damaged"), "{name}: {text}");
                // Every line before the damage is a record, in order, and nothing after.
                assert_eq!(*line as usize, got.len(), "{name} cut at {cut}");
                for (i, (line, text)) in got[..got.len() - 1].iter().enumerate() {
                    assert_eq!(*line as usize, i + 1);
                    assert_eq!(text, &format!("{{\"n\":{}}}", i + 1));
                }
            }
        }
    }

    #[test]
    fn a_failing_store_is_an_error_not_damage() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("connection reset"));
                }
                let n = self.0.min(buf.len()).min(4);
                buf[..n].copy_from_slice(&b"a\nb\n"[..n]);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut got = Vec::new();
        let error = read_records(
            Broken(4),
            InputFormat::Lines,
            InputCompression::None,
            &mut |line, record| {
                got.push((line, record));
                true
            },
        )
        .unwrap_err();
        assert!(error.message.contains("connection reset"), "{error}");
        assert_eq!(got.len(), 2, "the records before it were emitted");
    }

    #[test]
    fn auto_picks_by_suffix() {
        use InputCompression as C;
        use InputFormat as F;
        assert_eq!(resolve("a/b.csv.gz", F::Auto, C::Auto), (F::Csv, C::Gzip));
        assert_eq!(resolve("x.JSON", F::Auto, C::Auto), (F::Json, C::None));
        assert_eq!(
            resolve("x.ndjson.zst", F::Auto, C::Auto),
            (F::Lines, C::Zstd)
        );
        assert_eq!(resolve("x.csv", F::Lines, C::None), (F::Lines, C::None));
    }
}
