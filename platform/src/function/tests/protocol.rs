use std::time::Duration;

use sluice_connectors::Classify as _;
use tokio::io::AsyncWriteExt;

use super::*;

fn error_line(record: usize, message: &str) -> OutputLine {
    OutputLine::Error(RecordError {
        record,
        message: message.into(),
    })
}

#[test]
fn classifies_rows_controls_and_empty_lines() {
    assert_eq!(parse_line(br#"{"a":1}"#, 1), Ok(OutputLine::Row));
    assert_eq!(parse_line(br#"  {"a":1}"#, 1), Ok(OutputLine::Row));
    assert_eq!(parse_line(br#"{ "x$": 1}"#, 1), Ok(OutputLine::Row));
    assert_eq!(parse_line(b"", 1), Ok(OutputLine::Empty));
    assert_eq!(parse_line(b"\r", 1), Ok(OutputLine::Empty));
    assert_eq!(parse_line(b"  \t", 1), Ok(OutputLine::Empty));
    assert_eq!(
        parse_line(br#"{"$error": {"record": 2, "message": "bad date"}}"#, 3),
        Ok(error_line(2, "bad date"))
    );
    assert_eq!(
        parse_line(br#" { "$ready" : true }"#, 0),
        Ok(OutputLine::Ready)
    );
}

#[test]
fn rejects_broken_lines_with_a_reason() {
    assert_eq!(parse_line(b"{\"a\":\"\xff\"}", 1), Err(LineError::NotUtf8));
    assert_eq!(
        parse_line(b"[1,2]", 1),
        Err(LineError::NotAnObject {
            found: "[1,2]".into()
        })
    );
    assert_eq!(
        parse_line(br#"{"$retry": true}"#, 1),
        Err(LineError::UnknownControl {
            name: "$retry".into()
        })
    );
    assert_eq!(
        parse_line(br#"{"$error": {"record": 3, "message": "x"}}"#, 3),
        Err(LineError::RecordOutOfRange {
            record: 3,
            records: 3
        })
    );
    for malformed in [
        &br#"{"$error": {"record": -1, "message": "x"}}"#[..],
        br#"{"$error": {"record": 0}}"#,
        br#"{"$error": "oops"}"#,
        br#"{"$ready": false}"#,
        br#"{"$ready": true, "$error": {"record": 0, "message": "x"}}"#,
        br#"{"$ready": tru"#,
    ] {
        let result = parse_line(malformed, 5);
        assert!(
            matches!(result, Err(LineError::MalformedControl { .. })),
            "{}: {result:?}",
            String::from_utf8_lossy(malformed)
        );
    }
}

async fn read_exec(
    output: &[u8],
    records: usize,
    limit: u64,
) -> Result<FunctionOutput, InvokeError> {
    let mut reader = OutputReader::new(output);
    let mut frame = OutputFrame::new(records, limit, Instant::now(), None);
    let end = reader.read_frame(&mut frame, Framing::UntilEof).await?;
    assert_eq!(end, FrameEnd::Complete);
    Ok(frame.finish())
}

#[tokio::test]
async fn exec_framing_collects_rows_and_errors() {
    let output = b"{\"a\":1}\r\n\n{\"$error\":{\"record\":1,\"message\":\"bad\"}}\n{\"$ready\":true}\n{\"a\":2}";
    let out = read_exec(output, 2, 1024).await.unwrap();
    assert_eq!(out.rows, b"{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(out.row_count, 2);
    assert_eq!(
        out.errors,
        vec![RecordError {
            record: 1,
            message: "bad".into()
        }]
    );
    // No spawn instant was given, so a `$ready` line measures nothing.
    assert_eq!(out.init_time, None);
}

#[tokio::test]
async fn empty_output_is_zero_rows() {
    let out = read_exec(b"", 3, 10).await.unwrap();
    assert_eq!(out.row_count, 0);
    assert!(out.rows.is_empty() && out.errors.is_empty());
}

#[tokio::test]
async fn protocol_errors_name_the_line() {
    let error = read_exec(b"{\"a\":1}\n{\"a\":\"\xfe\"}\n", 1, 1024)
        .await
        .unwrap_err();
    match error {
        InvokeError::Protocol { line, reason } => {
            assert_eq!(line, 2);
            assert!(reason.contains("UTF-8"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    let error = read_exec(b"\n\nnot json", 1, 1024).await.unwrap_err();
    assert!(
        matches!(error, InvokeError::Protocol { line: 3, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_byte_limit_counts_every_stdout_byte() {
    let output = b"{\"a\":1}\n{\"$ready\":true}\n";
    let exact = output.len() as u64;
    assert_eq!(read_exec(output, 1, exact).await.unwrap().row_count, 1);
    let error = read_exec(output, 1, exact - 1).await.unwrap_err();
    assert!(
        matches!(error, InvokeError::OutputTooLarge { limit } if limit == exact - 1),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_endless_line_stops_at_the_limit() {
    let mut reader = OutputReader::new(tokio::io::repeat(b'x'));
    let mut frame = OutputFrame::new(1, 1 << 20, Instant::now(), None);
    let error = reader
        .read_frame(&mut frame, Framing::UntilEof)
        .await
        .unwrap_err();
    assert!(matches!(error, InvokeError::OutputTooLarge { .. }));
    assert!(
        reader.buffer.len() < 4 << 20,
        "reading stopped near the limit"
    );
}

#[tokio::test]
async fn a_long_line_is_one_row() {
    let mut output = b"{\"s\":\"".to_vec();
    output.resize(output.len() + 10 * 1024 * 1024, b'y');
    output.extend_from_slice(b"\"}\n");
    let out = read_exec(&output, 1, 64 << 20).await.unwrap();
    assert_eq!(out.row_count, 1);
    assert_eq!(out.rows, output);
}

#[tokio::test]
async fn stream_framing_splits_batches_at_empty_lines() {
    let output: &[u8] = b"{\"$ready\":true}\n{\"b\":1}\n\n{\"b\":2}\n{\"b\":3}\n\n{\"b\":4}\n";
    let mut reader = OutputReader::new(output);

    let mut first = OutputFrame::new(1, 1024, Instant::now(), Some(Instant::now()));
    let end = reader
        .read_frame(&mut first, Framing::UntilEmptyLine)
        .await
        .unwrap();
    assert_eq!(end, FrameEnd::Complete);
    let first = first.finish();
    assert_eq!(first.rows, b"{\"b\":1}\n");
    assert!(first.init_time.is_some(), "`$ready` measured init time");

    let mut second = OutputFrame::new(2, 1024, Instant::now(), None);
    let end = reader
        .read_frame(&mut second, Framing::UntilEmptyLine)
        .await
        .unwrap();
    assert_eq!(end, FrameEnd::Complete);
    let second = second.finish();
    assert_eq!(second.rows, b"{\"b\":2}\n{\"b\":3}\n");
    assert_eq!(second.init_time, None);

    // The stream ends without the empty line that would end the third batch.
    let mut third = OutputFrame::new(1, 1024, Instant::now(), None);
    let end = reader
        .read_frame(&mut third, Framing::UntilEmptyLine)
        .await
        .unwrap();
    assert_eq!(end, FrameEnd::Eof);
    assert_eq!(third.next_line_number(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_read_resumes_without_losing_bytes() {
    let (pipe, mut writer) = tokio::io::simplex(1024);
    let mut reader = OutputReader::new(pipe);
    let mut frame = OutputFrame::new(1, 1024, Instant::now(), None);

    writer.write_all(b"{\"a\":1}\n{\"b\":").await.unwrap();
    let cancelled = tokio::time::timeout(
        Duration::from_secs(1),
        reader.read_frame(&mut frame, Framing::UntilEmptyLine),
    )
    .await;
    assert!(cancelled.is_err(), "no empty line yet, so the read pends");

    writer.write_all(b"2}\n\n").await.unwrap();
    let end = reader
        .read_frame(&mut frame, Framing::UntilEmptyLine)
        .await
        .unwrap();
    assert_eq!(end, FrameEnd::Complete);
    assert_eq!(frame.finish().rows, b"{\"a\":1}\n{\"b\":2}\n");
}

#[test]
fn retryability_separates_missing_programs() {
    let missing = InvokeError::Spawn {
        command: "nope".into(),
        source: io::Error::from(io::ErrorKind::NotFound),
    };
    assert!(!missing.is_transient());
    let busy = InvokeError::Spawn {
        command: "x".into(),
        source: io::Error::from_raw_os_error(nix::libc::EAGAIN),
    };
    assert!(busy.is_transient());
    assert!(
        InvokeError::Timeout {
            after: Duration::from_secs(1)
        }
        .is_transient()
    );
}

#[test]
fn messages_say_what_happened_and_whose_fault() {
    let killed = InvokeError::Killed {
        signal: 9,
        stderr_tail: String::new(),
    };
    assert_eq!(
        killed.to_string(),
        "batch failed: function was killed by SIGKILL (function error or resource limit); stderr: (empty)"
    );
    let exit = InvokeError::Exit {
        code: 3,
        stderr_tail: "boom".into(),
    };
    assert_eq!(
        exit.to_string(),
        "batch failed: function exited with code 3 (function error); stderr: boom"
    );
}

#[tokio::test]
async fn in_stream_mode_ready_is_only_valid_as_the_first_line_of_an_instance() {
    let read_stream = |output: &'static [u8], first_of_instance: bool| async move {
        let mut reader = OutputReader::new(output);
        let spawned_at = first_of_instance.then(Instant::now);
        let mut frame = OutputFrame::new(1, 1024, Instant::now(), spawned_at);
        reader
            .read_frame(&mut frame, Framing::UntilEmptyLine)
            .await
            .map(|_| frame.finish())
    };
    let first = read_stream(b"{\"$ready\":true}\n{\"a\":1}\n\n", true).await;
    assert_eq!(first.unwrap().row_count, 1);

    for (output, first_of_instance, line) in [
        // A row, then `$ready`: the row may belong to nothing the platform sent.
        (&b"{\"a\":1}\n{\"$ready\":true}\n\n"[..], true, 2),
        // `$ready` in a later batch.
        (&b"{\"$ready\":true}\n\n"[..], false, 1),
    ] {
        match read_stream(output, first_of_instance).await {
            Err(InvokeError::Protocol { line: at, reason }) => {
                assert_eq!(at, line);
                assert!(reason.contains("only be the first line"), "{reason}");
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unread_output_is_seen_without_waiting() {
    let (pipe, mut writer) = tokio::io::simplex(1024);
    let mut reader = OutputReader::new(pipe);
    assert!(!reader.has_unread_output().unwrap(), "nothing written yet");
    writer.write_all(b"{\"a\":1}\n\n\n").await.unwrap();
    let mut frame = OutputFrame::new(1, 1024, Instant::now(), None);
    let end = reader
        .read_frame(&mut frame, Framing::UntilEmptyLine)
        .await
        .unwrap();
    assert_eq!(end, FrameEnd::Complete);
    assert!(reader.has_unread_output().unwrap(), "the stray empty line");
}
