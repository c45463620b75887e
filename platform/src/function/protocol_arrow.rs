//! Reading a function's stdout with `encoding = "arrow"`: one Arrow IPC stream per batch.
//!
//! The answer is a complete IPC stream (schema message, dictionary and record batch
//! messages, the end-of-stream marker `0xFFFFFFFF 0x00000000`). In stream mode an instance
//! may write the NDJSON line `{"$ready": true}` before its first stream, as with NDJSON;
//! in exec mode that line is ignored. Messages are framed here (continuation marker, size,
//! flatbuffer metadata, body) and each complete one is decoded at once, while the function
//! is still writing the next.
//!
//! Two reserved columns carry rejections: a utf8 column `$error` and an integer column
//! `$record`. A row whose `$error` is not null rejects input record `$record` (0-based)
//! and carries no output; rows whose `$error` is null are data. Any other column starting
//! with `$` is a protocol error.
//!
//! Invariants: as for NDJSON, every stdout byte of a batch counts against `max_output`,
//! and the reader never consumes a byte past the end-of-stream marker, so the next batch's
//! answer starts where this one ended. Reading is cancel-safe: state lives in the reader
//! and the frame.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::DataType;
use tokio::io::AsyncRead;

use super::protocol::{FrameEnd, Framing, InvokeError, OutputFrame, OutputReader, RecordError};

/// The 4 bytes that open every message of the current IPC format.
const CONTINUATION: u32 = 0xFFFF_FFFF;

/// Column names of rejections in an answer.
pub const ERROR_COLUMN: &str = "$error";
pub const RECORD_COLUMN: &str = "$record";

/// Record batches of an Arrow answer, control columns removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArrowRows(pub Vec<RecordBatch>);

impl Eq for ArrowRows {}

/// The Arrow part of a frame being read.
#[derive(Debug, Default)]
pub(crate) struct ArrowFrame {
    decoder: StreamDecoder,
    /// Messages consumed so far, the end-of-stream marker included.
    messages: usize,
    pub(super) batches: Vec<RecordBatch>,
    pub(super) rows: usize,
}

/// What the bytes at the front of the buffer hold.
enum Next {
    /// Not enough bytes yet.
    Incomplete,
    /// A message of this many bytes, header included.
    Message(usize),
    /// The end-of-stream marker, of this many bytes.
    EndOfStream(usize),
}

/// Sizes the message at the front of `bytes` without copying it.
fn next_message(bytes: &[u8]) -> Result<Next, String> {
    let Some(marker) = bytes.get(..4) else {
        return Ok(Next::Incomplete);
    };
    let marker = u32::from_le_bytes([marker[0], marker[1], marker[2], marker[3]]);
    if marker != CONTINUATION {
        let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into();
        return Err(format!(
            "expected an Arrow IPC stream message (continuation marker 0xFFFFFFFF), found {shown:?}"
        ));
    }
    let Some(size) = bytes.get(4..8) else {
        return Ok(Next::Incomplete);
    };
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size == 0 {
        return Ok(Next::EndOfStream(8));
    }
    let Some(metadata) = bytes.get(8..8 + size) else {
        return Ok(Next::Incomplete);
    };
    let message = arrow_ipc::root_as_message(metadata)
        .map_err(|error| format!("malformed Arrow IPC message metadata: {error}"))?;
    let body = usize::try_from(message.bodyLength())
        .map_err(|_| "Arrow IPC message with a negative body length".to_string())?;
    let total = 8 + size + body;
    Ok(if bytes.len() >= total {
        Next::Message(total)
    } else {
        Next::Incomplete
    })
}

impl<R: AsyncRead + Unpin> OutputReader<R> {
    /// Reads one batch's Arrow answer into `frame`: through the end-of-stream marker, or
    /// in exec mode ([`Framing::UntilEof`]) also to the end of file after a complete
    /// message. Cancel-safe.
    pub(crate) async fn read_arrow_frame(
        &mut self,
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<FrameEnd, InvokeError> {
        loop {
            if self.arrow_step(frame, framing)? {
                return self.after_end_of_stream(frame, framing).await;
            }
            if self.eof {
                return self.arrow_end_of_file(frame, framing);
            }
            self.fill().await?;
        }
    }

    /// Consumes every complete line or message buffered; `Ok(true)` at end of stream.
    fn arrow_step(
        &mut self,
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<bool, InvokeError> {
        loop {
            let available = &self.buffer[self.start..];
            if available.is_empty() {
                return Ok(false);
            }
            if frame.arrow().messages == 0 && available[0] == b'{' {
                // The readiness line, before the first message only.
                let Some(line) = self.next_buffered_line() else {
                    frame.check_limit(self.buffer.len() - self.start)?;
                    return Ok(false);
                };
                frame.count_bytes(line.len() + 1)?;
                frame.accept_ready_line(&self.buffer[line], framing)?;
                continue;
            }
            let next = next_message(available).map_err(|reason| frame.arrow_error(reason))?;
            let length = match next {
                Next::Incomplete => {
                    frame.check_limit(available.len())?;
                    return Ok(false);
                }
                Next::EndOfStream(length) | Next::Message(length) => length,
            };
            frame.count_bytes(length)?;
            let message = self.start..self.start + length;
            self.start += length;
            self.scanned = 0;
            frame.arrow().messages += 1;
            if matches!(next, Next::EndOfStream(_)) {
                return Ok(true);
            }
            let mut bytes = Buffer::from(&self.buffer[message]);
            while !bytes.is_empty() {
                let decoded = frame.arrow().decoder.decode(&mut bytes);
                if let Some(batch) =
                    decoded.map_err(|error| frame.arrow_error(error.to_string()))?
                {
                    frame.accept_arrow_batch(batch)?;
                }
            }
        }
    }

    /// Exec mode: nothing may follow the end-of-stream marker.
    async fn after_end_of_stream(
        &mut self,
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<FrameEnd, InvokeError> {
        if framing == Framing::UntilEof {
            while !self.eof {
                self.fill().await?;
                frame.check_limit(self.buffer.len() - self.start)?;
            }
            if self.start < self.buffer.len() {
                return Err(
                    frame.arrow_error("output continues after the end-of-stream marker".into())
                );
            }
        }
        if frame.arrow().decoder.schema().is_none() {
            return Err(frame.arrow_error("the Arrow IPC stream has no schema message".into()));
        }
        Ok(FrameEnd::Complete)
    }

    fn arrow_end_of_file(
        &mut self,
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<FrameEnd, InvokeError> {
        let complete = self.start == self.buffer.len() && frame.arrow().decoder.schema().is_some();
        match framing {
            Framing::UntilEmptyLine => Ok(FrameEnd::Eof),
            // Exec mode: a stream whose writer ended at a message boundary without the
            // end-of-stream marker is complete.
            Framing::UntilEof if complete => Ok(FrameEnd::Complete),
            Framing::UntilEof => Ok(FrameEnd::Eof),
        }
    }
}

impl OutputFrame {
    /// Splits rejections off a decoded batch and keeps its data rows.
    fn accept_arrow_batch(&mut self, batch: RecordBatch) -> Result<(), InvokeError> {
        let records = self.records();
        let (data, errors) =
            split_rejections(batch, records).map_err(|reason| self.arrow_error(reason))?;
        self.push_errors(errors);
        let arrow = self.arrow();
        arrow.rows += data.num_rows();
        if data.num_rows() > 0 {
            arrow.batches.push(data);
        }
        Ok(())
    }

    fn arrow_error(&self, reason: String) -> InvokeError {
        InvokeError::Protocol {
            line: 0,
            reason: format!("in the Arrow IPC answer: {reason}"),
        }
    }
}

/// Data rows and rejections of one answer batch (see the module doc).
fn split_rejections(
    batch: RecordBatch,
    records: usize,
) -> Result<(RecordBatch, Vec<RecordError>), String> {
    let schema = batch.schema();
    if let Some(unknown) = schema.fields().iter().find(|field| {
        field.name().starts_with('$')
            && field.name() != ERROR_COLUMN
            && field.name() != RECORD_COLUMN
    }) {
        return Err(format!(
            "unknown control column `{}` (only `$error` and `$record` exist)",
            unknown.name()
        ));
    }
    let (error_at, record_at) = match (
        schema.index_of(ERROR_COLUMN),
        schema.index_of(RECORD_COLUMN),
    ) {
        (Err(_), Err(_)) => return Ok((batch, Vec::new())),
        (Ok(error_at), Ok(record_at)) => (error_at, record_at),
        _ => return Err("columns `$error` and `$record` go together".into()),
    };
    let messages = arrow_cast::cast(batch.column(error_at), &DataType::Utf8)
        .ok()
        .filter(|_| {
            matches!(
                schema.field(error_at).data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
            )
        })
        .ok_or("column `$error` must be utf8")?;
    let indexes = arrow_cast::cast(batch.column(record_at), &DataType::Int64)
        .ok()
        .filter(|_| schema.field(record_at).data_type().is_integer())
        .ok_or("column `$record` must be an integer column")?;
    let messages = messages.as_string::<i32>();
    let indexes = indexes.as_primitive::<Int64Type>();
    let mut errors = Vec::new();
    for row in 0..batch.num_rows() {
        if messages.is_null(row) {
            continue;
        }
        let record = (!indexes.is_null(row)).then(|| indexes.value(row));
        match record.and_then(|record| usize::try_from(record).ok()) {
            Some(record) if record < records => errors.push(RecordError {
                record,
                message: messages.value(row).to_owned(),
            }),
            _ => {
                return Err(format!(
                    "`$record` {} of a rejection is not a record of the batch ({records} records)",
                    record.map_or("null".into(), |record| record.to_string())
                ));
            }
        }
    }
    let keep: Vec<usize> = (0..schema.fields().len())
        .filter(|&index| index != error_at && index != record_at)
        .collect();
    let data = batch.project(&keep).map_err(|error| error.to_string())?;
    if errors.is_empty() {
        return Ok((data, errors));
    }
    let mask =
        BooleanArray::from_iter((0..batch.num_rows()).map(|row| Some(messages.is_null(row))));
    let data = arrow_select::filter::filter_record_batch(&data, &mask)
        .map_err(|error| error.to_string())?;
    Ok((data, errors))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_ipc::writer::StreamWriter;
    use arrow_schema::{Field, Schema};

    use super::*;

    fn stream(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, array)| array).collect(),
        )
        .unwrap();
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        bytes
    }

    fn values(values: &[i64]) -> Vec<u8> {
        stream(vec![("v", Arc::new(Int64Array::from(values.to_vec())))])
    }

    fn frame(records: usize, limit: u64, fresh: bool) -> OutputFrame {
        let now = Instant::now();
        OutputFrame::new(records, limit, now, fresh.then_some(now)).arrow_encoded()
    }

    async fn read(
        input: &[u8],
        frame: &mut OutputFrame,
        framing: Framing,
    ) -> Result<FrameEnd, InvokeError> {
        OutputReader::new(input).read_frame(frame, framing).await
    }

    #[tokio::test]
    async fn a_stream_ends_at_its_marker_and_the_next_one_waits() {
        let mut input = b"{\"$ready\": true}\n".to_vec();
        input.extend(values(&[1, 2]));
        let first_end = input.len();
        input.extend(values(&[3]));
        let mut reader = OutputReader::new(&input[..]);
        let mut first = frame(2, 1 << 20, true);
        let end = reader
            .read_frame(&mut first, Framing::UntilEmptyLine)
            .await
            .unwrap();
        assert_eq!(end, FrameEnd::Complete);
        assert_eq!(
            reader.start + (input.len() - first_end),
            reader.buffer.len()
        );
        let output = first.finish();
        assert!(output.init_time.is_some());
        assert_eq!(output.row_count, 4, "two record batches of two rows");
        let mut second = frame(1, 1 << 20, false);
        let end = reader
            .read_frame(&mut second, Framing::UntilEmptyLine)
            .await
            .unwrap();
        assert_eq!(end, FrameEnd::Complete);
        assert_eq!(second.finish().row_count, 2);
        let mut third = frame(1, 1 << 20, false);
        let end = reader
            .read_frame(&mut third, Framing::UntilEmptyLine)
            .await
            .unwrap();
        assert_eq!(end, FrameEnd::Eof);
    }

    #[tokio::test]
    async fn ndjson_instead_of_arrow_is_a_protocol_error() {
        for input in [&b"{\"a\": 1}\n"[..], b"hello world\n"] {
            let error = read(input, &mut frame(1, 1 << 20, true), Framing::UntilEmptyLine)
                .await
                .unwrap_err();
            assert!(matches!(error, InvokeError::Protocol { .. }), "{error}");
        }
    }

    #[tokio::test]
    async fn exec_mode_refuses_output_after_the_stream() {
        let mut input = values(&[1]);
        input.extend(b"x");
        let error = read(&input, &mut frame(1, 1 << 20, true), Framing::UntilEof)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("after the end-of-stream"),
            "{error}"
        );
        let mut complete = frame(1, 1 << 20, true);
        let end = read(&values(&[1]), &mut complete, Framing::UntilEof)
            .await
            .unwrap();
        assert_eq!(end, FrameEnd::Complete);
    }

    #[tokio::test]
    async fn the_output_limit_counts_arrow_bytes() {
        let input = values(&(0..10_000).collect::<Vec<_>>());
        let error = read(&input, &mut frame(1, 4096, true), Framing::UntilEmptyLine)
            .await
            .unwrap_err();
        assert!(
            matches!(error, InvokeError::OutputTooLarge { limit: 4096 }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn rejections_become_record_errors() {
        let input = stream(vec![
            ("v", Arc::new(Int64Array::from(vec![Some(1), None]))),
            (
                "$error",
                Arc::new(StringArray::from(vec![None, Some("bad")])),
            ),
            ("$record", Arc::new(Int64Array::from(vec![0, 1]))),
        ]);
        let mut rejecting = frame(2, 1 << 20, true);
        read(&input, &mut rejecting, Framing::UntilEmptyLine)
            .await
            .unwrap();
        let output = rejecting.finish();
        assert_eq!(output.row_count, 2, "one data row per record batch");
        assert_eq!(output.errors.len(), 2);
        assert_eq!(
            (output.errors[0].record, output.errors[0].message.as_str()),
            (1, "bad")
        );
        let batches = &output.arrow.unwrap().0;
        assert_eq!(
            batches[0].schema().fields().len(),
            1,
            "control columns removed"
        );

        let out_of_range = read(
            &input,
            &mut frame(1, 1 << 20, true),
            Framing::UntilEmptyLine,
        )
        .await
        .unwrap_err();
        assert!(
            out_of_range.to_string().contains("not a record"),
            "{out_of_range}"
        );
        let unknown = stream(vec![("$other", Arc::new(Int64Array::from(vec![1])))]);
        let error = read(
            &unknown,
            &mut frame(1, 1 << 20, true),
            Framing::UntilEmptyLine,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("`$other`"), "{error}");
    }
}
