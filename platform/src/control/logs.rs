//! Function stderr lines per job, for `GET /v1/jobs/{name}/logs` and `sluice logs`.
//!
//! Each line comes masked from the function's stderr reader ([`StderrTap`]), with the
//! instance that wrote it; the batch attempt is filled in when that instance's attempt is
//! recorded ([`JobLog::tag`]), so a line read after its attempt ended has the next one's
//! id or none.
//!
//! Kept in memory, in a bounded ring per job ([`RING_LINES`], oldest dropped first), on the
//! node that ran the function: this is one node's view, and a restart forgets it. With
//! several nodes, each serves the lines of the instances it ran; the invocation records
//! (in the registry) keep each attempt's stderr tail for good.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::registry::now_ms;
use crate::function::StderrTap;

/// Lines kept per job.
pub const RING_LINES: usize = 5_000;
/// Largest stderr tail an invocation record quotes.
const TAIL_BYTES: usize = 4 * 1024;
/// How far back [`JobLog::tag`] looks before the attempt started (reading lags writing).
const TAG_SLACK_MS: i64 = 1_000;

/// One stderr line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Increases by one per line of the job (survives versions, not restarts).
    pub seq: u64,
    pub time_ms: i64,
    pub instance: String,
    /// The invocation (batch attempt) id, once known.
    pub batch: Option<String>,
    pub line: String,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    next_seq: u64,
}

/// The lines of one job. See the module docs.
#[derive(Debug)]
pub struct JobLog {
    ring: Mutex<Ring>,
    /// The newest line's `seq + 1`.
    latest: watch::Sender<u64>,
}

impl Default for JobLog {
    fn default() -> Self {
        Self {
            ring: Mutex::default(),
            latest: watch::Sender::new(0),
        }
    }
}

impl StderrTap for JobLog {
    fn line(&self, instance: &str, line: &str) {
        let next = {
            let mut ring = self.lock();
            let seq = ring.next_seq;
            ring.next_seq += 1;
            if ring.lines.len() >= RING_LINES {
                ring.lines.pop_front();
            }
            ring.lines.push_back(LogLine {
                seq,
                time_ms: now_ms(),
                instance: instance.to_owned(),
                batch: None,
                line: line.to_owned(),
            });
            ring.next_seq
        };
        self.latest.send_replace(next);
    }
}

impl JobLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lines with `seq >= from`, oldest first, at most the newest `limit` of them.
    pub fn lines(&self, from: u64, limit: usize) -> Vec<LogLine> {
        let ring = self.lock();
        let newer = ring.lines.iter().filter(|line| line.seq >= from);
        let count = newer.clone().count();
        newer.skip(count.saturating_sub(limit)).cloned().collect()
    }

    /// Gives the untagged lines `instance` wrote since shortly before `started_ms` the
    /// attempt id `batch`; returns their last [`TAIL_BYTES`], for the invocation record.
    pub fn tag(&self, instance: &str, batch: &str, started_ms: i64) -> String {
        let mut ring = self.lock();
        let mut tagged = Vec::new();
        for line in ring.lines.iter_mut().rev() {
            if line.time_ms < started_ms - TAG_SLACK_MS {
                break;
            }
            if line.instance != instance {
                continue;
            }
            if line.batch.is_some() {
                break;
            }
            line.batch = Some(batch.to_owned());
            tagged.push(line.line.as_str());
        }
        tail_of(tagged.into_iter().rev())
    }

    /// The `seq` the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Waits until a line with `seq >= from` exists, or `bound` passes.
    pub async fn wait_for(&self, from: u64, bound: Duration) {
        let mut latest = self.latest.subscribe();
        let _ = tokio::time::timeout(bound, latest.wait_for(|next| *next > from)).await;
    }
}

/// The last [`TAIL_BYTES`] of `lines` joined by newlines, starting at a whole line.
fn tail_of<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut tail = String::new();
    for line in lines {
        tail.push_str(line);
        tail.push('\n');
    }
    while tail.len() > TAIL_BYTES {
        match tail.find('\n') {
            Some(newline) if newline + 1 < tail.len() => {
                tail.drain(..=newline);
            }
            _ => {
                let mut cut = tail.len() - TAIL_BYTES;
                while !tail.is_char_boundary(cut) {
                    cut += 1;
                }
                tail.drain(..cut);
            }
        }
    }
    tail.truncate(tail.trim_end().len());
    tail
}

/// Every job's lines on this node, and whether the server is stopping (a following
/// reader then ends).
#[derive(Debug, Default)]
pub struct FunctionLogs {
    jobs: Mutex<HashMap<String, Arc<JobLog>>>,
    closed: CancellationToken,
}

impl FunctionLogs {
    /// The job's lines, made empty on first use.
    pub fn job(&self, job: &str) -> Arc<JobLog> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(jobs.entry(job.to_owned()).or_default())
    }

    /// Forgets a deleted job's lines.
    pub fn remove(&self, job: &str) {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.remove(job);
    }

    /// Ends every following reader (the server is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_tagged_with_their_attempt_and_the_ring_is_bounded() {
        let log = JobLog::default();
        let started = now_ms();
        log.line("job-1", "loading model");
        log.line("job-2", "other instance");
        log.line("job-1", "record 7 looks odd");
        assert_eq!(
            log.tag("job-1", "run-1.1", started),
            "loading model\nrecord 7 looks odd"
        );
        log.line("job-1", "next batch");
        assert_eq!(log.tag("job-1", "run-2.1", started), "next batch");
        let lines = log.lines(0, 100);
        let batches: Vec<_> = lines.iter().map(|line| line.batch.as_deref()).collect();
        assert_eq!(
            batches,
            [Some("run-1.1"), None, Some("run-1.1"), Some("run-2.1")]
        );
        assert_eq!(log.lines(2, 100).len(), 2);
        assert_eq!(log.lines(0, 1)[0].line, "next batch");
        for n in 0..RING_LINES + 10 {
            log.line("job-3", &format!("line {n}"));
        }
        let lines = log.lines(0, usize::MAX);
        assert_eq!(lines.len(), RING_LINES);
        assert_eq!(lines.last().unwrap().seq, (RING_LINES + 13) as u64);
    }

    #[test]
    fn the_tail_keeps_the_last_whole_lines_within_4_kib() {
        let lines: Vec<String> = (0..1000).map(|n| format!("line {n}")).collect();
        let tail = tail_of(lines.iter().map(String::as_str));
        assert!(tail.len() <= TAIL_BYTES);
        assert!(tail.starts_with("line "), "{:.20}", tail);
        assert!(tail.ends_with("line 999"));
    }
}
