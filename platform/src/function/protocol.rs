//! Reading a function's stdout: the output side of the function protocol.
//!
//! Output is NDJSON. Each line is one of a closed set ([`OutputLine`]):
//! - a data row: a JSON object (the first non-blank byte is `{`), copied as is into
//!   [`FunctionOutput::rows`] for the Arrow JSON decoder, which checks it in full later;
//! - a control line, an object whose first key starts with `$`: `{"$error": {"record": i,
//!   "message": "…"}}` (record `i` of the batch failed) or `{"$ready": true}` (the instance
//!   finished initialising; in stream mode only valid as the instance's very first line,
//!   in exec mode ignored); any other `$` key is a protocol error naming it;
//! - an empty line: the end of a batch's output in stream mode (ignored in exec mode, where
//!   the output ends at end of file).
//!
//! Invariants: `rows` holds only data lines, each ending in `\n`, in output order; every
//! stdout byte of a batch, control lines and framing included, counts against the
//! `max_output` limit; a line may be as long as the limit allows; lines must be UTF-8.
//!
//! [`OutputReader`] is the framed reader over the pipe. Its state lives in the reader and
//! in the per-batch [`OutputFrame`], never in a pending future, so a read may be cancelled
//! (by a timeout or a `select!`) and resumed without losing bytes.

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use super::invoke_error::{InvokeError, MemoryEnforcement};
use super::protocol_arrow::{ArrowFrame, ArrowRows};

/// What a function returned for one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionOutput {
    /// Data lines only (JSON objects), each ending in `\n`, in the order written.
    pub rows: Vec<u8>,
    /// Number of lines in `rows`.
    pub row_count: usize,
    /// Per-record failures the function reported with `$error`, in the order written.
    pub errors: Vec<RecordError>,
    /// Time from the instance's spawn to its `$ready` line, when this batch saw it
    /// (the first batch of a stream instance that announces readiness).
    pub init_time: Option<Duration>,
    /// Wall time of the invocation, instance start included for a cold start.
    pub duration: Duration,
    /// Whether this invocation was the first of its instance (a cold start: an exec-mode
    /// process, or a stream instance's first batch).
    pub cold_start: bool,
    /// With `encoding = "arrow"`: the answer's data rows (`rows` is then empty and
    /// `row_count` counts these).
    pub arrow: Option<ArrowRows>,
}

/// A record the function reported as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// 0-based index of the record in the input batch.
    pub record: usize,
    pub message: String,
}

/// One line of function output, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutputLine {
    /// A data row; the caller copies the line.
    Row,
    /// An empty (or blank) line.
    Empty,
    /// `{"$error": …}`.
    Error(RecordError),
    /// `{"$ready": true}`.
    Ready,
}

/// Why a line is not valid output. Accepting a data row allocates nothing; only the error
/// paths do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LineError {
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("expected a JSON object (a line starting with `{{`), found `{found}`")]
    NotAnObject { found: String },
    #[error("unknown control line `{name}` (only `$error` and `$ready` exist)")]
    UnknownControl { name: String },
    #[error("malformed control line: {reason}")]
    MalformedControl { reason: String },
    #[error("`$error` names record {record} but the batch has {records} records")]
    RecordOutOfRange { record: u64, records: usize },
    #[error("`$ready` may only be the first line a stream instance writes (logs belong on stderr)")]
    MisplacedReady,
}

/// Classifies one output line (without its `\n`). `records` is the batch size, which
/// bounds `$error` record indexes.
pub(crate) fn parse_line(line: &[u8], records: usize) -> Result<OutputLine, LineError> {
    let line = strip_cr(line);
    let Some(first) = line.iter().position(|&b| b != b' ' && b != b'\t') else {
        return Ok(OutputLine::Empty);
    };
    if std::str::from_utf8(line).is_err() {
        return Err(LineError::NotUtf8);
    }
    if line[first] != b'{' {
        let shown: String = String::from_utf8_lossy(&line[first..])
            .chars()
            .take(40)
            .collect();
        return Err(LineError::NotAnObject { found: shown });
    }
    let after_brace = &line[first + 1..];
    let key_start = after_brace
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t'))
        .map(|at| &after_brace[at..]);
    match key_start {
        Some([b'"', b'$', ..]) => parse_control(line, records),
        _ => Ok(OutputLine::Row),
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[derive(Deserialize)]
struct ErrorBody {
    record: u64,
    message: String,
}

fn parse_control(line: &[u8], records: usize) -> Result<OutputLine, LineError> {
    let malformed = |reason: String| LineError::MalformedControl { reason };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).map_err(|e| malformed(e.to_string()))?;
    let mut entries = object.into_iter();
    let (Some((name, body)), None) = (entries.next(), entries.next()) else {
        return Err(malformed("a control line holds exactly one `$` key".into()));
    };
    match name.as_str() {
        "$error" => {
            let body: ErrorBody = serde_json::from_value(body).map_err(|e| {
                malformed(format!(
                    "`$error` needs {{\"record\": <index>, \"message\": <string>}}: {e}"
                ))
            })?;
            match usize::try_from(body.record) {
                Ok(record) if record < records => Ok(OutputLine::Error(RecordError {
                    record,
                    message: body.message,
                })),
                _ => Err(LineError::RecordOutOfRange {
                    record: body.record,
                    records,
                }),
            }
        }
        "$ready" if body == serde_json::Value::Bool(true) => Ok(OutputLine::Ready),
        "$ready" => Err(malformed(format!("`$ready` must be `true`, found {body}"))),
        _ => Err(LineError::UnknownControl { name }),
    }
}

/// How a batch's output ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exec mode: at end of file; blank lines are skipped; a last line without `\n` counts.
    UntilEof,
    /// Stream mode: at the first empty line.
    UntilEmptyLine,
}

/// How reading a batch's output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameEnd {
    /// The output is complete.
    Complete,
    /// Stream mode only: stdout closed before the empty line that ends the batch.
    Eof,
}

/// The output of one batch as it is being read.
#[derive(Debug)]
pub(crate) struct OutputFrame {
    records: usize,
    limit: u64,
    /// Stdout bytes of this batch consumed so far.
    bytes_seen: u64,
    /// 1-based number of the last line consumed.
    line: usize,
    rows: Vec<u8>,
    row_count: usize,
    errors: Vec<RecordError>,
    started: Instant,
    /// When the instance was spawned, if a `$ready` line in this batch measures init time.
    spawned_at: Option<Instant>,
    /// Whether this is the first batch of a fresh instance (stream mode: the only one
    /// whose first line may be `$ready`).
    first_of_instance: bool,
    init_time: Option<Duration>,
    /// With `encoding = "arrow"`: the decoded answer so far.
    arrow: Option<ArrowFrame>,
}

impl OutputFrame {
    /// A frame for a batch of `records` records whose invocation began at `started`.
    /// `spawned_at` is the spawn instant of a fresh instance (a `$ready` line then yields
    /// the init time), `None` for a warm one.
    pub(crate) fn new(
        records: usize,
        limit: u64,
        started: Instant,
        spawned_at: Option<Instant>,
    ) -> Self {
        Self {
            records,
            limit,
            bytes_seen: 0,
            line: 0,
            rows: Vec::new(),
            row_count: 0,
            errors: Vec::new(),
            started,
            spawned_at,
            first_of_instance: spawned_at.is_some(),
            init_time: None,
            arrow: None,
        }
    }

    /// The same frame with room for `bytes` of data rows up front (at most the output
    /// limit): most functions answer about as many bytes as they were given, and a buffer
    /// grown by doubling copies everything it held at every step.
    pub(crate) fn expecting(mut self, bytes: usize) -> Self {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        self.rows.reserve_exact(bytes.min(limit));
        self
    }

    /// The same frame for an answer in `encoding = "arrow"`.
    pub(crate) fn arrow_encoded(mut self) -> Self {
        self.arrow = Some(ArrowFrame::default());
        self
    }

    pub(super) fn arrow(&mut self) -> &mut ArrowFrame {
        self.arrow.get_or_insert_with(ArrowFrame::default)
    }

    pub(super) fn records(&self) -> usize {
        self.records
    }

    pub(super) fn push_errors(&mut self, errors: Vec<RecordError>) {
        self.errors.extend(errors);
    }

    /// Consumes a line before an Arrow answer: only `{"$ready": true}` may be there.
    pub(super) fn accept_ready_line(
        &mut self,
        line: &[u8],
        framing: Framing,
    ) -> Result<(), InvokeError> {
        self.line += 1;
        match parse_line(line, self.records).map_err(|e| self.protocol_error(e))? {
            OutputLine::Ready => self.ready(framing),
            _ => Err(InvokeError::Protocol {
                line: self.line,
                reason: "expected an Arrow IPC stream; the only line allowed before it is {\"$ready\": true}".into(),
            }),
        }
    }

    /// The output so far, with the wall time since the frame started.
    pub(crate) fn finish(self) -> FunctionOutput {
        let (arrow, row_count) = match self.arrow {
            Some(arrow) => (Some(ArrowRows(arrow.batches)), arrow.rows),
            None => (None, self.row_count),
        };
        FunctionOutput {
            arrow,
            rows: self.rows,
            row_count,
            errors: self.errors,
            init_time: self.init_time,
            cold_start: self.first_of_instance,
            duration: self.started.elapsed(),
        }
    }

    /// The line number the next line would get, for errors about a missing line.
    pub(crate) fn next_line_number(&self) -> usize {
        self.line + 1
    }

    /// Whether this frame is the first batch of a fresh instance.
    pub(crate) fn is_first_of_instance(&self) -> bool {
        self.first_of_instance
    }

    fn protocol_error(&self, error: LineError) -> InvokeError {
        InvokeError::Protocol {
            line: self.line,
            reason: error.to_string(),
        }
    }

    /// Consumes one line; `Ok(true)` when it ends the batch.
    fn accept(&mut self, line: &[u8], framing: Framing) -> Result<bool, InvokeError> {
        self.line += 1;
        match parse_line(line, self.records).map_err(|e| self.protocol_error(e))? {
            OutputLine::Row => {
                self.rows.extend_from_slice(strip_cr(line));
                self.rows.push(b'\n');
                self.row_count += 1;
            }
            OutputLine::Empty => return Ok(framing == Framing::UntilEmptyLine),
            OutputLine::Error(error) => self.errors.push(error),
            OutputLine::Ready => self.ready(framing)?,
        }
        Ok(false)
    }

    fn ready(&mut self, framing: Framing) -> Result<(), InvokeError> {
        // In stream mode a `$ready` anywhere else means the instance wrote something else
        // first: framing can no longer be trusted.
        let first_line_of_instance = self.first_of_instance && self.line == 1;
        if framing == Framing::UntilEmptyLine && !first_line_of_instance {
            return Err(self.protocol_error(LineError::MisplacedReady));
        }
        if let Some(spawned_at) = self.spawned_at.take() {
            self.init_time = Some(spawned_at.elapsed());
        }
        Ok(())
    }

    pub(super) fn count_bytes(&mut self, bytes: usize) -> Result<(), InvokeError> {
        self.bytes_seen = self.bytes_seen.saturating_add(bytes as u64);
        self.check_limit(0)
    }

    pub(super) fn check_limit(&self, pending: usize) -> Result<(), InvokeError> {
        if self.bytes_seen.saturating_add(pending as u64) > self.limit {
            return Err(InvokeError::OutputTooLarge { limit: self.limit });
        }
        Ok(())
    }
}

/// Bytes asked of the pipe per read.
const READ_CHUNK: usize = 64 * 1024;

/// A framed reader over a function's stdout. It outlives batches in stream mode: bytes
/// after the end of one batch's output stay buffered for the next.
#[derive(Debug)]
pub(crate) struct OutputReader<R> {
    source: R,
    pub(super) buffer: Vec<u8>,
    /// Start of the unconsumed bytes in `buffer`.
    pub(super) start: usize,
    /// How many unconsumed bytes are known to hold no `\n`.
    pub(super) scanned: usize,
    pub(super) eof: bool,
}

impl<R: AsyncRead + Unpin> OutputReader<R> {
    pub(crate) fn new(source: R) -> Self {
        Self {
            source,
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            eof: false,
        }
    }

    /// Reads one batch's output into `frame` until it ends as `framing` says, enforcing
    /// the frame's byte limit. Cancel-safe: calling it again resumes where it stopped.
    pub(crate) async fn read_frame(
        &mut self,
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<FrameEnd, InvokeError> {
        if frame.arrow.is_some() {
            return self.read_arrow_frame(frame, framing).await;
        }
        loop {
            while let Some(line) = self.next_buffered_line() {
                frame.count_bytes(line.len() + 1)?;
                if frame.accept(&self.buffer[line], framing)? {
                    return Ok(FrameEnd::Complete);
                }
            }
            let pending = self.buffer.len() - self.start;
            frame.check_limit(pending)?;
            if self.eof {
                return self.end_of_file(frame, framing);
            }
            self.fill().await?;
        }
    }

    fn end_of_file(
        &mut self,
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<FrameEnd, InvokeError> {
        match framing {
            Framing::UntilEmptyLine => Ok(FrameEnd::Eof),
            Framing::UntilEof => {
                if self.start < self.buffer.len() {
                    let last = self.start..self.buffer.len();
                    self.start = self.buffer.len();
                    self.scanned = 0;
                    frame.count_bytes(last.len())?;
                    frame.accept(&self.buffer[last], framing)?;
                }
                Ok(FrameEnd::Complete)
            }
        }
    }

    /// The next complete line in the buffer (without its `\n`), consumed.
    pub(super) fn next_buffered_line(&mut self) -> Option<Range<usize>> {
        let unscanned = self.start + self.scanned;
        match memchr::memchr(b'\n', &self.buffer[unscanned..]) {
            Some(at) => {
                let line = self.start..unscanned + at;
                self.start = unscanned + at + 1;
                self.scanned = 0;
                Some(line)
            }
            None => {
                self.scanned = self.buffer.len() - self.start;
                None
            }
        }
    }

    /// Whether the function wrote anything that no frame has consumed yet, without
    /// waiting: bytes already buffered, or bytes the pipe has ready now.
    pub(crate) fn has_unread_output(&mut self) -> io::Result<bool> {
        if self.start == self.buffer.len() && !self.eof {
            // `fill` is cancel-safe: when the pipe has nothing, nothing is read.
            if let Some(filled) = self.fill().now_or_never() {
                filled?;
            }
        }
        Ok(self.start < self.buffer.len())
    }

    /// Reads more bytes from the pipe, first dropping consumed ones.
    pub(super) async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.reserve(READ_CHUNK);
        if self.source.read_buf(&mut self.buffer).await? == 0 {
            self.eof = true;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tests/protocol.rs"]
mod tests;
