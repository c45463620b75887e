//! Stream mode: a long-lived instance that handles batch after batch.
//!
//! A batch is written as its NDJSON lines followed by one empty line; the instance answers
//! with its output lines followed by one empty line. Before its first answer an instance
//! may write `{"$ready": true}`; the time from spawn to that line is its init time.
//!
//! An instance may write `$ready` only as its first line, and nothing between an answer's
//! empty line and the next batch; either mistake is a protocol error (stray output would
//! otherwise be read as the next batch's answer). Output written late, after the next
//! batch was sent, cannot be told apart from the answer.
//!
//! Invariants: an instance handles one batch at a time; after any failure (exit or crash
//! mid-batch, timeout, protocol violation, too much output) it is killed with its whole
//! process group and reaped before the error is returned, and it is never used again
//! ([`StreamInstance::is_usable`] turns false). The same holds when it exits right after
//! completing a batch: that batch's output stands, the instance is done.

use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, ChildStdout};

use super::encode::EncodedBatch;
use super::protocol::{FrameEnd, Framing, FunctionOutput, InvokeError, OutputFrame, OutputReader};
use super::sandbox::{FunctionProcess, InstanceContext};
use crate::spec::{Encoding, FunctionSpec};

/// How long an instance that closed stdout mid-batch gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a killed process to be reaped.
const REAP_BOUND: Duration = Duration::from_secs(5);

/// A running stream-mode instance.
#[derive(Debug)]
pub(crate) struct StreamInstance {
    id: String,
    process: FunctionProcess,
    /// `None` once the instance is stopping or dead.
    stdin: Option<ChildStdin>,
    reader: OutputReader<ChildStdout>,
    batches: u64,
    usable: bool,
}

/// How the instance was after a batch's output was complete.
enum AfterBatch {
    Running,
    Exited,
}

impl StreamInstance {
    /// Starts an instance (spawned, or forked from the job's zygote); it is warm (its init
    /// time measured) after its first batch.
    pub(crate) async fn start(context: &InstanceContext<'_>) -> Result<Self, InvokeError> {
        let (process, pipes) = FunctionProcess::start(context).await?;
        Ok(Self {
            id: context.instance.to_owned(),
            process,
            stdin: Some(pipes.stdin),
            reader: OutputReader::new(pipes.stdout),
            batches: 0,
            usable: true,
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Batches this instance has been given, the current one included.
    pub(crate) fn batches(&self) -> u64 {
        self.batches
    }

    /// Whether the instance can take another batch.
    pub(crate) fn is_usable(&self) -> bool {
        self.usable
    }

    /// Whether the instance is still running (it may have died while idle).
    pub(crate) fn is_running(&mut self) -> bool {
        !self.process.has_exited()
    }

    /// Kills the instance and everything it started, without a grace period.
    pub(crate) async fn kill(mut self) {
        self.usable = false;
        self.stdin = None;
        self.process.kill_and_reap(REAP_BOUND).await;
        self.process.release().await;
    }

    /// Runs one batch. On error the instance has been killed and must be dropped.
    pub(crate) async fn invoke(
        &mut self,
        batch: &EncodedBatch,
        spec: &FunctionSpec,
    ) -> Result<FunctionOutput, InvokeError> {
        let cold = self.batches == 0;
        let spawned_at = cold.then(|| self.process.spawned_at());
        // A cold start's invocation began when the instance was spawned.
        let started = spawned_at.unwrap_or_else(Instant::now);
        self.batches += 1;
        self.process.begin_batch();
        let mut frame = OutputFrame::new(batch.records, spec.max_output, started, spawned_at);
        // An NDJSON batch ends with an empty line; an Arrow IPC stream ends itself.
        let end_of_batch: &[u8] = match spec.encoding {
            Encoding::Ndjson => {
                frame = frame.expecting(batch.bytes.len());
                b"\n"
            }
            Encoding::Arrow => {
                frame = frame.arrow_encoded();
                b""
            }
        };
        let driven = tokio::time::timeout(
            spec.timeout,
            self.drive(&mut frame, &batch.bytes, end_of_batch),
        )
        .await;
        let result = match driven {
            Ok(Ok(AfterBatch::Running)) => {
                self.process.end_batch();
                return Ok(frame.finish());
            }
            Ok(Ok(AfterBatch::Exited)) => {
                tracing::warn!(
                    instance = self.id,
                    "function instance exited after answering a batch; the next batch starts a new one"
                );
                Ok(frame.finish())
            }
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => Err(InvokeError::Timeout {
                after: spec.timeout,
            }),
        };
        self.usable = false;
        self.stdin = None;
        self.process.kill_and_reap(REAP_BOUND).await;
        let result = match result {
            Ok(output) => Ok(output),
            Err(error) => Err(self.process.explain(error).await),
        };
        self.process.end_batch();
        self.process.release().await;
        result
    }

    /// Writes the batch and reads its answer at the same time, watching for an exit.
    async fn drive(
        &mut self,
        frame: &mut OutputFrame,
        input: &[u8],
        end_of_batch: &[u8],
    ) -> Result<AfterBatch, InvokeError> {
        let Self {
            process,
            stdin,
            reader,
            ..
        } = self;
        let Some(stdin) = stdin.as_mut() else {
            return Err(InvokeError::Io(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "function instance is no longer running",
            )));
        };
        // Before any batch but the first, nothing may be waiting on stdout: the previous
        // answer ended at its empty line, and more output means the framing is off.
        if !frame.is_first_of_instance() && reader.has_unread_output()? {
            return Err(InvokeError::Protocol {
                line: 1,
                reason: "instance wrote output after the empty line that ended its previous answer; an answer ends with exactly one empty line".into(),
            });
        }
        let group = process.group();
        let write = async {
            stdin.write_all(input).await?;
            stdin.write_all(end_of_batch).await?;
            stdin.flush().await
        };
        let read = async {
            let read = read_answer(process, reader, frame).await;
            if !matches!(read, Ok(AfterBatch::Running)) {
                // Unblocks the writer if the instance stopped reading.
                group.kill();
            }
            read
        };
        let (written, read) = tokio::join!(write, read);
        let after = read?;
        // The answer is complete but the batch did not fully go in: the instance answered
        // without reading to the empty line, or closed its stdin.
        written.map_err(InvokeError::Io)?;
        Ok(after)
    }

    /// Stops the instance: stdin closed, SIGTERM to its group, SIGKILL to all its
    /// processes after `grace`.
    pub(crate) async fn stop(mut self, grace: Duration) {
        self.usable = false;
        self.stdin = None;
        self.process.group().signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(Ok(status)) => {
                tracing::debug!(instance = self.id, %status, "function instance stopped");
            }
            Ok(Err(error)) => {
                tracing::warn!(instance = self.id, %error, "failed to wait for function instance");
            }
            Err(_elapsed) => {
                tracing::warn!(
                    instance = self.id,
                    ?grace,
                    "function instance ignored SIGTERM; killing it"
                );
            }
        }
        // Also reaches anything the instance started and left behind.
        self.process.kill_and_reap(REAP_BOUND).await;
        self.process.end_batch();
        self.process.release().await;
    }
}

/// Reads one batch's answer, or works out why there is none.
async fn read_answer(
    process: &mut FunctionProcess,
    reader: &mut OutputReader<ChildStdout>,
    frame: &mut OutputFrame,
) -> Result<AfterBatch, InvokeError> {
    let outcome = tokio::select! {
        biased;
        end = reader.read_frame(frame, Framing::UntilEmptyLine) => Outcome::Read(end?),
        status = process.wait() => Outcome::Exited(status?),
    };
    match outcome {
        Outcome::Read(FrameEnd::Complete) => Ok(AfterBatch::Running),
        Outcome::Read(FrameEnd::Eof) => {
            // stdout closed: the instance is most likely exiting; learn how.
            match tokio::time::timeout(EXIT_GRACE, process.wait()).await {
                Ok(status) => Err(exited_mid_batch(process, status?, frame).await),
                Err(_elapsed) => Err(InvokeError::Protocol {
                    line: frame.next_line_number(),
                    reason: "instance closed stdout before the empty line that ends the batch"
                        .into(),
                }),
            }
        }
        Outcome::Exited(status) => {
            // Anything it started dies too, so the pipe reaches end of file; the output
            // the instance wrote before exiting is still in the pipe. `read_frame` is
            // cancel-safe, so reading resumes exactly where the `select!` left it.
            process.kill_group();
            match reader.read_frame(frame, Framing::UntilEmptyLine).await? {
                FrameEnd::Complete => Ok(AfterBatch::Exited),
                FrameEnd::Eof => Err(exited_mid_batch(process, status, frame).await),
            }
        }
    }
}

enum Outcome {
    Read(FrameEnd),
    Exited(ExitStatus),
}

async fn exited_mid_batch(
    process: &mut FunctionProcess,
    status: ExitStatus,
    frame: &OutputFrame,
) -> InvokeError {
    process.kill_group();
    if status.success() {
        InvokeError::Protocol {
            line: frame.next_line_number(),
            reason: "instance exited with code 0 before the empty line that ends the batch".into(),
        }
    } else {
        process.failure(status).await
    }
}
