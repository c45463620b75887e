//! Exec mode: one process per batch.
//!
//! The batch is written to stdin, which is then closed, while stdout is read at the same
//! time (a function may write output before it has read all its input; writing first and
//! reading after would deadlock once both pipes are full). The process succeeds by exiting
//! 0 after writing its rows; it may stop reading early (a broken pipe on stdin is then no
//! error).
//!
//! A function that closes stdout early but keeps running is waited for until the timeout,
//! then killed: the batch fails with a timeout.
//!
//! Invariants: when [`run_batch`] returns, the process and everything it started are dead
//! (its cgroup, when it has one, is emptied and removed) and the leader is reaped,
//! whatever the outcome; the timeout covers spawn to exit.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use super::encode::EncodedBatch;
use super::protocol::{FrameEnd, Framing, FunctionOutput, InvokeError, OutputFrame, OutputReader};
use super::sandbox::{FunctionProcess, InstanceContext};
use crate::spec::Encoding;

/// How long to wait for a killed process to be reaped.
const REAP_BOUND: Duration = Duration::from_secs(5);

/// Runs one batch through a fresh process for `context`.
pub(crate) async fn run_batch(
    context: &InstanceContext<'_>,
    batch: &EncodedBatch,
) -> Result<FunctionOutput, InvokeError> {
    let spec = context.spec;
    let started = Instant::now();
    let (mut process, pipes) = FunctionProcess::start(context).await?;
    tracing::debug!(
        job = context.job,
        instance = context.instance,
        pid = process.pid(),
        records = batch.records,
        "started function process"
    );
    let mut frame = OutputFrame::new(
        batch.records,
        spec.max_output,
        started,
        Some(process.spawned_at()),
    );
    frame = match spec.encoding {
        Encoding::Arrow => frame.arrow_encoded(),
        Encoding::Ndjson => frame.expecting(batch.bytes.len()),
    };
    let mut reader = OutputReader::new(pipes.stdout);
    let driven = tokio::time::timeout(
        spec.timeout,
        drive(
            &mut process,
            pipes.stdin,
            &mut reader,
            &mut frame,
            &batch.bytes,
        ),
    )
    .await;
    let result = match driven {
        Ok(Ok(())) => Ok(frame.finish()),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Err(InvokeError::Timeout {
            after: spec.timeout,
        }),
    };
    let result = match result {
        Ok(output) => Ok(output),
        Err(error) => {
            process.kill_and_reap(REAP_BOUND).await;
            Err(process.explain(error).await)
        }
    };
    process.end_batch();
    process.release().await;
    result
}

/// Feeds the input, reads the output and waits for the exit, all at once.
async fn drive(
    process: &mut FunctionProcess,
    stdin: ChildStdin,
    reader: &mut OutputReader<tokio::process::ChildStdout>,
    frame: &mut OutputFrame,
    input: &[u8],
) -> Result<(), InvokeError> {
    let group = process.group();
    let write = async {
        let written = write_and_close(stdin, input).await;
        if written
            .as_ref()
            .is_err_and(|error| error.kind() != io::ErrorKind::BrokenPipe)
        {
            group.kill();
        }
        written
    };
    let read = async {
        let read = reader.read_frame(frame, Framing::UntilEof).await;
        if read.is_err() {
            // Stop the function so the writer and the exit wait finish too.
            group.kill();
        }
        read
    };
    let exit = async {
        let status = process.wait().await;
        // Whatever the leader started dies with it; such stragglers would otherwise keep
        // stdout open. The leader's own output is already in the pipe and still readable.
        group.kill();
        status
    };
    let (written, read, status) = tokio::join!(write, read, exit);

    match read? {
        FrameEnd::Complete => {}
        FrameEnd::Eof => {
            return Err(InvokeError::Protocol {
                line: frame.next_line_number(),
                reason: "output ended unexpectedly".into(),
            });
        }
    }
    let status = status?;
    if !status.success() {
        return Err(process.failure(status).await);
    }
    match written {
        // The function exited 0 without reading all its input: its choice.
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(InvokeError::Io(error)),
        _ => Ok(()),
    }
}

async fn write_and_close(mut stdin: ChildStdin, input: &[u8]) -> io::Result<()> {
    stdin.write_all(input).await?;
    stdin.flush().await?;
    drop(stdin);
    Ok(())
}
