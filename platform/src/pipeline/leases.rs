//! Instances lent to batch tasks for one invocation at a time.
//!
//! A batch task encodes its input without an instance, borrows one for the function call
//! only, gives it back, then decodes the output. So while one batch's input is encoded
//! and another's output decoded, the instance already runs a third: the platform's work
//! and the function's overlap even with a single instance. An instance waiting out a
//! retry's backoff is free for other batches too.
//!
//! The pool stays the pipeline's own (one owner, no lock). Tasks queue for an instance in
//! a shared line, and tell the pipeline through a channel it serves between its other
//! work ([`Pipeline::lend`](super::Pipeline)). A lease that ends while a task waits hands
//! its instance straight to that task, so the instance never idles until the pipeline's
//! next turn (which may be busy encoding Parquet or committing):
//!
//! ```text
//! task                                   pipeline
//! Lender::lease().await   joins the line, ──Wanted──▶ pool.lease() → the line's first
//! Lease::give_back()      line empty?  ──Return───▶ pool.release(runner, records, busy)
//!                         else to its first, ──HandedOn──▶ the autoscaler's measurement
//! Lease dropped holding its runner (a panic) ──Lost──▶ pool.forget_busy()
//! ```
//!
//! Invariant: a runner is idle in the pool, in a [`Lease`], or on its way between them
//! (a `Return` message, or a reply to the task first in line); every runner the pool
//! lends ends in exactly one `Return` or `Lost` (handing on keeps it lent), so the pool's
//! busy count and node slots stay exact. Tasks are never aborted while the pipeline runs,
//! so no reply is dropped with a runner in it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::function::FunctionRunner;

/// What batch tasks tell the pipeline about instances.
#[derive(Debug)]
pub(super) enum LeaseMessage {
    /// A task joined the line for an instance.
    Wanted,
    /// An instance is back: it handled `records` in `busy`.
    Return {
        runner: Box<FunctionRunner>,
        records: usize,
        busy: Duration,
    },
    /// An instance went from one task straight to the next, after handling `records` in
    /// `busy`; it stays lent.
    HandedOn { records: usize, busy: Duration },
    /// A lease ended without its runner (its task panicked): the instance is gone.
    Lost,
}

/// Tasks waiting for an instance, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Line(Arc<Mutex<VecDeque<oneshot::Sender<FunctionRunner>>>>);

impl Line {
    /// The line, locked. Nothing that can panic runs under the lock.
    pub(super) fn lock(&self) -> MutexGuard<'_, VecDeque<oneshot::Sender<FunctionRunner>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `runner` to the task first in line that still waits; back if none does.
    fn hand_on(&self, mut runner: FunctionRunner) -> Option<FunctionRunner> {
        let mut line = self.lock();
        while let Some(reply) = line.pop_front() {
            match reply.send(runner) {
                Ok(()) => return None,
                Err(back) => runner = back,
            }
        }
        Some(runner)
    }
}

/// How batch tasks borrow instances; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Lender {
    messages: mpsc::UnboundedSender<LeaseMessage>,
    line: Line,
}

impl Lender {
    /// A lender, the receiving end the pipeline serves, and the line it lends to.
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<LeaseMessage>, Line) {
        let (messages, receiver) = mpsc::unbounded_channel();
        let line = Line::default();
        let lender = Self {
            messages,
            line: line.clone(),
        };
        (lender, receiver, line)
    }

    /// Waits for an instance. `None` only when the pipeline stopped lending (it has
    /// stopped serving its tasks, which never happens while it waits for them).
    pub(super) async fn lease(&self) -> Option<Lease> {
        let (reply, answer) = oneshot::channel();
        self.line.lock().push_back(reply);
        self.messages.send(LeaseMessage::Wanted).ok()?;
        let runner = answer.await.ok()?;
        Some(Lease {
            runner: Some(runner),
            since: Instant::now(),
            messages: self.messages.clone(),
            line: self.line.clone(),
        })
    }
}

/// One instance, lent for one invocation. Give it back with [`Lease::give_back`];
/// dropped without that (a panic), the instance is stopped and the pool told it is gone.
#[derive(Debug)]
pub(super) struct Lease {
    runner: Option<FunctionRunner>,
    since: Instant,
    messages: mpsc::UnboundedSender<LeaseMessage>,
    line: Line,
}

impl Lease {
    pub(super) fn runner(&mut self) -> &mut FunctionRunner {
        self.runner
            .as_mut()
            .expect("a lease holds its runner until it ends")
    }

    /// Hands the instance to the next task in line, or back to the pool: it handled
    /// `records` since it was lent.
    pub(super) fn give_back(mut self, records: usize) {
        let Some(runner) = self.runner.take() else {
            return;
        };
        let busy = self.since.elapsed();
        // A pipeline that stopped listening has no pool left to return it to.
        let _ = match self.line.hand_on(runner) {
            None => self.messages.send(LeaseMessage::HandedOn { records, busy }),
            Some(runner) => self.messages.send(LeaseMessage::Return {
                runner: Box::new(runner),
                records,
                busy,
            }),
        };
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(runner) = self.runner.take() {
            // Mid-invocation its instance's state is unknown: stopped with the runner.
            drop(runner);
            let _ = self.messages.send(LeaseMessage::Lost);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::parse_job;

    /// A runner that never starts a process: these tests only pass it around.
    fn runner() -> FunctionRunner {
        let text = r#"name = "lease-test"
[trigger.bucket]
url = "memory://in"
[function]
command = ["cat"]
[output]
url = "out"
schema = { id = "int64" }
"#;
        let dir = Path::new(".");
        let spec = parse_job(text, &dir.join("job.toml"), dir, &|_| None).unwrap();
        FunctionRunner::new(&spec.name, &spec.dir, &spec.function)
    }

    /// Serves the first task in line with a runner, as the pipeline does.
    async fn serve_one(receiver: &mut mpsc::UnboundedReceiver<LeaseMessage>, line: &Line) {
        assert!(matches!(receiver.recv().await, Some(LeaseMessage::Wanted)));
        let reply = line.lock().pop_front().expect("a task waits");
        reply.send(runner()).unwrap();
    }

    #[tokio::test]
    async fn a_lease_given_back_returns_its_runner_with_what_it_did() {
        let (lender, mut receiver, line) = Lender::new();
        let (lease, ()) = tokio::join!(lender.lease(), serve_one(&mut receiver, &line));
        lease.unwrap().give_back(42);
        match receiver.try_recv() {
            Ok(LeaseMessage::Return { records, .. }) => assert_eq!(records, 42),
            other => panic!("expected a return, got {other:?}"),
        }
        assert!(receiver.try_recv().is_err(), "one message per lease");
    }

    #[tokio::test]
    async fn a_lease_given_back_while_a_task_waits_goes_straight_to_it() {
        let (lender, mut receiver, line) = Lender::new();
        let (first, ()) = tokio::join!(lender.lease(), serve_one(&mut receiver, &line));
        let waiting = tokio::spawn({
            let lender = lender.clone();
            async move { lender.lease().await.map(|lease| lease.give_back(5)) }
        });
        assert!(matches!(receiver.recv().await, Some(LeaseMessage::Wanted)));
        first.unwrap().give_back(7);
        match receiver.recv().await {
            Some(LeaseMessage::HandedOn { records, .. }) => assert_eq!(records, 7),
            other => panic!("expected a hand-on, got {other:?}"),
        }
        // The second task got the instance without the pipeline, and returns it.
        assert!(waiting.await.unwrap().is_some());
        match receiver.recv().await {
            Some(LeaseMessage::Return { records, .. }) => assert_eq!(records, 5),
            other => panic!("expected a return, got {other:?}"),
        }
        assert!(line.lock().is_empty());
    }

    #[tokio::test]
    async fn a_task_that_stopped_waiting_is_passed_over() {
        let (lender, mut receiver, line) = Lender::new();
        let (first, ()) = tokio::join!(lender.lease(), serve_one(&mut receiver, &line));
        let (gone, answer) = oneshot::channel();
        drop(answer);
        line.lock().push_back(gone);
        first.unwrap().give_back(1);
        assert!(matches!(
            receiver.try_recv(),
            Ok(LeaseMessage::Return { .. })
        ));
        assert!(line.lock().is_empty());
    }

    #[tokio::test]
    async fn a_lease_dropped_without_giving_back_reports_its_instance_lost() {
        let (lender, mut receiver, line) = Lender::new();
        let (lease, ()) = tokio::join!(lender.lease(), serve_one(&mut receiver, &line));
        let task = tokio::spawn(async move {
            let _lease = lease;
            panic!("a batch task panics while holding its lease");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(matches!(receiver.try_recv(), Ok(LeaseMessage::Lost)));
        assert!(receiver.try_recv().is_err(), "one message per lease");
    }

    #[tokio::test]
    async fn a_wait_the_pipeline_drops_ends_without_a_lease() {
        let (lender, mut receiver, line) = Lender::new();
        let refuse = async {
            assert!(matches!(receiver.recv().await, Some(LeaseMessage::Wanted)));
            drop(line.lock().pop_front());
        };
        let (lease, ()) = tokio::join!(lender.lease(), refuse);
        assert!(lease.is_none());
    }
}
