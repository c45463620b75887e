//! Turning one object's bytes into records, streamed: never the whole object in memory
//! (except `raw`, whose one record is the object).
//!
//! | format | records |
//! |---|---|
//! | `lines` | one per non-empty line (NDJSON or text); `\r\n` accepted; a line that is not UTF-8 is an error naming it |
//! | `csv` | one per row after the header row, as a JSON object `{header: value}` of strings; a row with a different number of fields than the header is an error naming its line |
//! | `json` | the elements of a top-level array, or the one top-level object |
//! | `raw` | one record: the object's bytes |
//!
//! Compression `gzip` (`.gz`) and `zstd` (`.zst`, `.zstd`) is undone first; `auto` picks
//! by the key's suffix, and `format = "auto"` picks `csv` for `.csv`, `json` for `.json`
//! and `lines` otherwise (after removing a compression suffix).
//!
//! Runs on a blocking thread: decompressors and the CSV parser are synchronous readers.

use std::fmt;
use std::io::{BufRead, BufReader, Read};

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

/// Why an object could not be read to its end; `line` is 1-based where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ReadError {
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl ReadError {
    fn at(line: u64, message: impl Into<String>) -> Self {
        Self {
            line: Some(line),
            message: message.into(),
        }
    }

    fn io(error: &std::io::Error, line: Option<u64>) -> Self {
        Self {
            line,
            message: format!("reading the object failed: {error}"),
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

/// Reads records from `input`, calling `emit(line, payload)` for each (line = the 1-based
/// line the record starts on for `lines`/`csv`, the element index for `json`, 1 for
/// `raw`). Stops at the first error; records before it were emitted. `emit` returns
/// false to stop early (the consumer went away).
pub fn read_records(
    input: impl Read,
    format: InputFormat,
    compression: InputCompression,
    emit: &mut dyn FnMut(u64, Bytes) -> bool,
) -> Result<(), ReadError> {
    let decompressed: Box<dyn Read> = match compression {
        InputCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        InputCompression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(|e| ReadError::io(&e, None))?)
        }
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
                .map_err(|e| ReadError::io(&e, None))?;
            emit(1, Bytes::from(body));
            Ok(())
        }
    }
}

fn read_lines(input: impl Read, emit: &mut dyn FnMut(u64, Bytes) -> bool) -> Result<(), ReadError> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ReadError::io(&e, Some(number)))?;
        if read == 0 {
            return Ok(());
        }
        let mut content = line.as_slice();
        content = content.strip_suffix(b"\n").unwrap_or(content);
        content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(error) = std::str::from_utf8(content) {
            return Err(ReadError::at(number, format!("not valid UTF-8 ({error})")));
        }
        if !emit(number, Bytes::copy_from_slice(content)) {
            return Ok(());
        }
    }
}

fn read_csv(input: impl Read, emit: &mut dyn FnMut(u64, Bytes) -> bool) -> Result<(), ReadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let csv_error = |error: csv::Error| {
        let line = error.position().map(csv::Position::line);
        let message = match error.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("row has {len} fields but the header has {expected_len}"),
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
            _ => error.to_string(),
        };
        ReadError { line, message }
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                let object: serde_json::Map<String, Value> = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
                    .collect();
                let payload = Value::Object(object).to_string();
                if !emit(line, Bytes::from(payload)) {
                    return Ok(());
                }
            }
            Err(error) => return Err(csv_error(error)),
        }
    }
}

fn read_json(input: impl Read, emit: &mut dyn FnMut(u64, Bytes) -> bool) -> Result<(), ReadError> {
    let mut deserializer = serde_json::Deserializer::from_reader(BufReader::new(input));
    let mut visitor = Elements {
        emit,
        stopped: false,
    };
    deserializer
        .deserialize_any(&mut visitor)
        .map_err(|e| ReadError::at(e.line() as u64, format!("invalid JSON: {e}")))?;
    if visitor.stopped {
        return Ok(());
    }
    deserializer.end().map_err(|e| {
        ReadError::at(
            e.line() as u64,
            format!("content after the JSON document: {e}"),
        )
    })
}

/// Emits the elements of a top-level array one by one, or a top-level object whole.
struct Elements<'a> {
    emit: &'a mut dyn FnMut(u64, Bytes) -> bool,
    stopped: bool,
}

impl<'de> Visitor<'de> for &mut Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records or one JSON object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(element) = seq.next_element::<Value>()? {
            index += 1;
            if !(self.emit)(index, Bytes::from(element.to_string())) {
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
        (self.emit)(1, Bytes::from(Value::Object(object).to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn records(
        bytes: &[u8],
        format: InputFormat,
        compression: InputCompression,
    ) -> Result<Vec<(u64, String)>, ReadError> {
        let mut out = Vec::new();
        read_records(bytes, format, compression, &mut |line, payload| {
            out.push((line, String::from_utf8(payload.to_vec()).unwrap()));
            true
        })?;
        Ok(out)
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
    fn non_utf8_line_is_named() {
        let error = records(
            b"ok\n\xff\xfe\n",
            InputFormat::Lines,
            InputCompression::None,
        )
        .unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("UTF-8"), "{error}");
    }

    #[test]
    fn csv_rows_become_objects_and_ragged_rows_are_errors() {
        let got = records(
            b"id,name\n1,\"a, b\"\n2,c\n",
            InputFormat::Csv,
            InputCompression::None,
        )
        .unwrap();
        assert_eq!(got[0], (2, r#"{"id":"1","name":"a, b"}"#.into()));
        assert_eq!(got[1], (3, r#"{"id":"2","name":"c"}"#.into()));
        let error = records(
            b"id,name\n1,a\n2\n",
            InputFormat::Csv,
            InputCompression::None,
        )
        .unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(
            error.message.contains("1 fields but the header has 2"),
            "{error}"
        );
    }

    #[test]
    fn json_arrays_stream_their_elements_and_objects_are_one_record() {
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
        assert!(
            records(
                b"[{\"a\":1}, oops]",
                InputFormat::Json,
                InputCompression::None
            )
            .is_err()
        );
        assert!(records(b"42", InputFormat::Json, InputCompression::None).is_err());
    }

    #[test]
    fn raw_is_one_record() {
        let got = records(b"\x00\x01binary", InputFormat::Raw, InputCompression::None);
        assert_eq!(got.unwrap().len(), 1);
    }

    #[test]
    fn gzip_and_zstd_are_undone_and_truncation_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            records(&gz, InputFormat::Lines, InputCompression::Gzip)
                .unwrap()
                .len(),
            2
        );
        let error = records(
            &gz[..gz.len() - 6],
            InputFormat::Lines,
            InputCompression::Gzip,
        )
        .unwrap_err();
        assert!(
            error.message.contains("reading the object failed"),
            "{error}"
        );

        let zst = zstd::stream::encode_all(&b"x\ny\n"[..], 1).unwrap();
        assert_eq!(
            records(&zst, InputFormat::Lines, InputCompression::Zstd)
                .unwrap()
                .len(),
            2
        );
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
