//! A function's stderr: read for the life of the process, logged line by line with job and
//! instance, within a budget.
//!
//! Invariants: stderr is always drained at the speed the function writes it (a function
//! never blocks on a full stderr pipe); memory is bounded (one line of at most
//! [`MAX_STDERR_LINE`] bytes being assembled, plus a tail of [`STDERR_TAIL_BYTES`]); at most
//! [`MAX_LOGGED_LINES_PER_BATCH`] lines are logged per batch, the rest are counted and
//! reported as one "… N more lines suppressed" record when the batch ends (or stderr
//! closes). The tail, which error messages quote, always holds the true last lines,
//! suppressed or not. Lines are masked with the job's secrets before they are logged or
//! kept (a function printing its own secret environment variable must not put it in the
//! platform's log, nor in error messages, dead letters or `/status`).
//!
//! A job may have a [`StderrTap`] ([`set_stderr_tap`]): every masked line, logged or
//! suppressed, is handed to it too (`sluice serve` keeps them for `GET …/logs`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;
use tokio::task::JoinHandle;

use crate::spec::secret::Secrets;

/// Longest stderr line logged; the rest of a longer line is dropped.
pub(crate) const MAX_STDERR_LINE: usize = 8 * 1024;
/// How much of the end of stderr error messages quote.
pub(crate) const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// Lines logged per batch; later lines of the batch are only counted.
pub(crate) const MAX_LOGGED_LINES_PER_BATCH: usize = 1000;

/// What the reader task shares with the process owner.
#[derive(Debug, Default)]
struct StderrState {
    tail: String,
    logged_in_batch: usize,
    suppressed_in_batch: u64,
}

/// Receives every stderr line of a job's function instances, masked and without its
/// newline. Called on the reader task: must queue and return, never wait.
pub trait StderrTap: Send + Sync + std::fmt::Debug {
    fn line(&self, instance: &str, line: &str);
}

/// The taps, by job name; read once per instance start.
static TAPS: LazyLock<Mutex<HashMap<String, Arc<dyn StderrTap>>>> = LazyLock::new(Mutex::default);

/// Hands the stderr lines of `job`'s instances started from now on to `tap` (none: to
/// no one).
pub fn set_stderr_tap(job: &str, tap: Option<Arc<dyn StderrTap>>) {
    let mut taps = TAPS.lock().unwrap_or_else(PoisonError::into_inner);
    match tap {
        Some(tap) => taps.insert(job.to_owned(), tap),
        None => taps.remove(job),
    };
}

fn tap_of(job: &str) -> Option<Arc<dyn StderrTap>> {
    let taps = TAPS.lock().unwrap_or_else(PoisonError::into_inner);
    taps.get(job).cloned()
}

/// Who wrote the lines, for the log records, what to mask in them, and who else gets them.
#[derive(Debug, Clone)]
struct Source {
    job: String,
    instance: String,
    secrets: Secrets,
    tap: Option<Arc<dyn StderrTap>>,
}

/// The task that reads a process's stderr, and what it kept. The task ends when stderr
/// closes, which happens at the latest when every process of the instance is killed.
#[derive(Debug)]
pub(crate) struct StderrLog {
    source: Source,
    state: Arc<Mutex<StderrState>>,
    task: Option<JoinHandle<()>>,
}

impl StderrLog {
    pub(crate) fn start(stderr: ChildStderr, job: &str, instance: &str, secrets: &Secrets) -> Self {
        let source = Source {
            job: job.to_owned(),
            instance: instance.to_owned(),
            secrets: secrets.clone(),
            tap: tap_of(job),
        };
        let state = Arc::new(Mutex::new(StderrState::default()));
        let task = tokio::spawn(log_stderr(stderr, source.clone(), Arc::clone(&state)));
        Self {
            source,
            state,
            task: Some(task),
        }
    }

    /// Reports the lines suppressed since the last batch ended and renews the budget.
    pub(crate) fn end_batch(&self) {
        end_batch(&self.source, &self.state);
    }

    /// Waits up to `bound` for stderr to close, then returns its tail.
    pub(crate) async fn finish(&mut self, bound: Duration) -> String {
        if let Some(task) = self.task.as_mut()
            && tokio::time::timeout(bound, task).await.is_ok()
        {
            self.task = None;
        }
        quoted_tail(&lock(&self.state).tail).to_owned()
    }
}

fn lock(state: &Mutex<StderrState>) -> std::sync::MutexGuard<'_, StderrState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn end_batch(source: &Source, state: &Mutex<StderrState>) {
    let suppressed = {
        let mut state = lock(state);
        state.logged_in_batch = 0;
        std::mem::take(&mut state.suppressed_in_batch)
    };
    if suppressed > 0 {
        tracing::warn!(
            target: "sluice::function",
            job = source.job,
            instance = source.instance,
            suppressed,
            "… {suppressed} more stderr lines suppressed (at most {MAX_LOGGED_LINES_PER_BATCH} are logged per batch)"
        );
    }
}

/// Logs each stderr line (capped at [`MAX_STDERR_LINE`]) within the budget and keeps the
/// tail.
async fn log_stderr(stderr: ChildStderr, source: Source, state: Arc<Mutex<StderrState>>) {
    let mut reader = BufReader::with_capacity(MAX_STDERR_LINE, stderr);
    let mut line = Vec::with_capacity(256);
    let mut truncated = false;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(error) => {
                tracing::warn!(job = source.job, instance = source.instance, %error, "failed to read function stderr");
                break;
            }
        };
        if chunk.is_empty() {
            if !line.is_empty() {
                emit_stderr_line(&source, &line, truncated, &state);
            }
            break;
        }
        let newline = memchr::memchr(b'\n', chunk);
        let take = newline.unwrap_or(chunk.len());
        let room = MAX_STDERR_LINE - line.len();
        line.extend_from_slice(&chunk[..take.min(room)]);
        truncated |= take > room;
        reader.consume(take + usize::from(newline.is_some()));
        if newline.is_some() {
            emit_stderr_line(&source, &line, truncated, &state);
            line.clear();
            truncated = false;
        }
    }
    end_batch(&source, &state);
}

fn emit_stderr_line(source: &Source, line: &[u8], truncated: bool, state: &Mutex<StderrState>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Borrowed, without a copy, when the line is valid UTF-8 and holds no secret.
    let text = String::from_utf8_lossy(line);
    let text = source.secrets.redact(&text);
    let marker = if truncated { " [truncated]" } else { "" };
    if let Some(tap) = &source.tap {
        if truncated {
            tap.line(&source.instance, &format!("{text}{marker}"));
        } else {
            tap.line(&source.instance, &text);
        }
    }
    let log = {
        let mut state = lock(state);
        append_to_tail(&mut state.tail, &text, marker);
        if state.logged_in_batch < MAX_LOGGED_LINES_PER_BATCH {
            state.logged_in_batch += 1;
            true
        } else {
            state.suppressed_in_batch += 1;
            false
        }
    };
    if log {
        tracing::info!(target: "sluice::function", job = source.job, instance = source.instance, "{text}{marker}");
    }
}

/// Appends a line to `tail`, which holds at most twice [`STDERR_TAIL_BYTES`] (trimming
/// only when it doubles keeps a flood of lines linear in its size).
fn append_to_tail(tail: &mut String, text: &str, marker: &str) {
    tail.push_str(text);
    tail.push_str(marker);
    tail.push('\n');
    if tail.len() > 2 * STDERR_TAIL_BYTES {
        let cut = tail_start(tail);
        tail.drain(..cut);
    }
}

/// Where the last [`STDERR_TAIL_BYTES`] of `tail` begin, moved to the start of a whole
/// line when one begins inside them.
fn tail_start(tail: &str) -> usize {
    if tail.len() <= STDERR_TAIL_BYTES {
        return 0;
    }
    let mut cut = tail.len() - STDERR_TAIL_BYTES;
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    if let Some(newline) = tail[cut..].find('\n')
        && cut + newline + 1 < tail.len()
    {
        cut += newline + 1;
    }
    cut
}

/// The tail as error messages quote it: its last [`STDERR_TAIL_BYTES`], from a line start.
fn quoted_tail(tail: &str) -> &str {
    tail[tail_start(tail)..].trim_end()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            job: "job".into(),
            instance: "job-1".into(),
            secrets: Secrets::default(),
            tap: None,
        }
    }

    /// Everything logged while `run` runs on this thread, as the fmt layer writes it.
    fn captured_log(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                lock_buffer(&self.0).extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        fn lock_buffer(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
            buffer.lock().unwrap_or_else(PoisonError::into_inner)
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        String::from_utf8_lossy(&lock_buffer(&buffer.0)).into_owned()
    }

    #[test]
    fn a_secret_the_function_prints_is_masked_in_the_log_and_the_tail() {
        let secret = "tok-9b1f27c4e8a3";
        let mut source = source();
        source.secrets.insert(secret);
        let state = Mutex::new(StderrState::default());
        let log = captured_log(|| {
            let line =
                format!("connecting with token {secret} to https://app:{secret}@api.example/v1");
            emit_stderr_line(&source, line.as_bytes(), false, &state);
        });
        assert!(log.contains("connecting with token ***"), "{log}");
        assert!(!log.contains(secret), "{log}");
        let tail = state.into_inner().unwrap().tail;
        assert!(!tail.contains(secret), "{tail}");
        assert!(
            tail.contains("token *** to https://***@api.example/v1"),
            "{tail}"
        );
    }

    #[test]
    fn the_tap_gets_every_line_masked_with_its_instance() {
        #[derive(Debug, Default)]
        struct Recording(Mutex<Vec<(String, String)>>);
        impl StderrTap for Recording {
            fn line(&self, instance: &str, line: &str) {
                lock_lines(&self.0).push((instance.to_owned(), line.to_owned()));
            }
        }
        fn lock_lines(
            lines: &Mutex<Vec<(String, String)>>,
        ) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
            lines.lock().unwrap_or_else(PoisonError::into_inner)
        }
        let secret = "tok-77e1a0c9d4";
        let tap = Arc::new(Recording::default());
        set_stderr_tap("tapped-job", Some(Arc::clone(&tap) as _));
        let mut source = source();
        source.secrets.insert(secret);
        source.tap = tap_of("tapped-job");
        set_stderr_tap("tapped-job", None);
        assert!(tap_of("tapped-job").is_none());
        let state = Mutex::new(StderrState::default());
        for n in 0..MAX_LOGGED_LINES_PER_BATCH + 5 {
            emit_stderr_line(&source, format!("{n}: {secret}").as_bytes(), false, &state);
        }
        emit_stderr_line(&source, b"long", true, &state);
        let lines = lock_lines(&tap.0);
        assert_eq!(
            lines.len(),
            MAX_LOGGED_LINES_PER_BATCH + 6,
            "suppressed lines too"
        );
        assert_eq!(lines[0], ("job-1".to_owned(), "0: ***".to_owned()));
        assert_eq!(lines.last().unwrap().1, "long [truncated]");
        assert!(lines.iter().all(|(_, line)| !line.contains(secret)));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let state = Mutex::new(StderrState::default());
        for n in 0..1000 {
            emit_stderr_line(&source(), format!("line {n}").as_bytes(), false, &state);
        }
        let kept = state.into_inner().unwrap().tail;
        assert!(
            kept.len() <= 2 * STDERR_TAIL_BYTES,
            "bounded: {}",
            kept.len()
        );
        let tail = quoted_tail(&kept);
        assert!(tail.len() <= STDERR_TAIL_BYTES);
        assert!(
            tail.starts_with("line "),
            "starts at a whole line: {tail:.20}"
        );
        assert!(tail.ends_with("line 999"));
    }

    #[test]
    fn lines_past_the_budget_are_counted_not_logged_and_the_budget_renews_per_batch() {
        let state = Mutex::new(StderrState::default());
        let extra = 25;
        for n in 0..MAX_LOGGED_LINES_PER_BATCH + extra {
            emit_stderr_line(&source(), format!("line {n}").as_bytes(), false, &state);
        }
        {
            let state = lock(&state);
            assert_eq!(state.logged_in_batch, MAX_LOGGED_LINES_PER_BATCH);
            assert_eq!(state.suppressed_in_batch, extra as u64);
            let last = format!("line {}", MAX_LOGGED_LINES_PER_BATCH + extra - 1);
            assert!(quoted_tail(&state.tail).ends_with(&last));
        }
        end_batch(&source(), &state);
        emit_stderr_line(&source(), b"next batch", false, &state);
        let state = lock(&state);
        assert_eq!((state.logged_in_batch, state.suppressed_in_batch), (1, 0));
    }
}
