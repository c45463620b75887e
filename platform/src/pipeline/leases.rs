//! Instances lent to batch tasks for one invocation at a time.
//!
//! A batch task encodes its input without an instance, borrows one for the function call
//! only, gives it back, then decodes the output. So while one batch's input is encoded
//! and another's output decoded, the instance already runs a third: the platform's work
//! and the function's overlap even with a single instance. An instance waiting out a
//! retry's backoff is free for other batches too.
//!
//! The pool stays the pipeline's own (one owner, no lock). Tasks ask for instances and
//! hand them back through a channel the pipeline serves between its other work
//! ([`Pipeline::lend`](super::Pipeline)):
//!
//! ```text
//! task                                   pipeline
//! Lender::lease().await  ──Want(reply)──▶ pool.lease() → reply, or the reply waits (FIFO)
//! Lease::give_back()     ──Return──────▶ pool.release(runner, records, busy); serve waiters
//! Lease dropped holding its runner (a panic) ──Lost──▶ pool.forget_busy()
//! ```
//!
//! Invariant: a runner is either idle in the pool, in a [`Lease`], or in a message on its
//! way back; every lease ends in exactly one `Return` or `Lost`, so the pool's busy count
//! and node slots stay exact.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::function::FunctionRunner;

/// What batch tasks tell the pipeline about instances.
#[derive(Debug)]
pub(super) enum LeaseMessage {
    /// A task wants an instance for one invocation.
    Want(oneshot::Sender<FunctionRunner>),
    /// An instance is back: it handled `records` in `busy`.
    Return {
        runner: Box<FunctionRunner>,
        records: usize,
        busy: Duration,
    },
    /// A lease ended without its runner (its task panicked): the instance is gone.
    Lost,
}

/// How batch tasks borrow instances; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Lender {
    messages: mpsc::UnboundedSender<LeaseMessage>,
}

impl Lender {
    /// A lender and the receiving end the pipeline serves.
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<LeaseMessage>) {
        let (messages, receiver) = mpsc::unbounded_channel();
        (Self { messages }, receiver)
    }

    /// Waits for an instance. `None` only when the pipeline stopped lending (it has
    /// stopped serving its tasks, which never happens while it waits for them).
    pub(super) async fn lease(&self) -> Option<Lease> {
        let (reply, answer) = oneshot::channel();
        self.messages.send(LeaseMessage::Want(reply)).ok()?;
        let runner = answer.await.ok()?;
        Some(Lease {
            runner: Some(runner),
            since: Instant::now(),
            messages: self.messages.clone(),
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
}

impl Lease {
    pub(super) fn runner(&mut self) -> &mut FunctionRunner {
        self.runner
            .as_mut()
            .expect("a lease holds its runner until it ends")
    }

    /// Hands the instance back: it handled `records` since it was lent.
    pub(super) fn give_back(mut self, records: usize) {
        if let Some(runner) = self.runner.take() {
            let busy = self.since.elapsed();
            // A pipeline that stopped listening has no pool left to return it to.
            let _ = self.messages.send(LeaseMessage::Return {
                runner: Box::new(runner),
                records,
                busy,
            });
        }
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

    /// Serves the first want with a runner, as the pipeline does.
    async fn serve_one(receiver: &mut mpsc::UnboundedReceiver<LeaseMessage>) {
        match receiver.recv().await {
            Some(LeaseMessage::Want(reply)) => reply.send(runner()).unwrap(),
            other => panic!("expected a want, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lease_given_back_returns_its_runner_with_what_it_did() {
        let (lender, mut receiver) = Lender::new();
        let (lease, ()) = tokio::join!(lender.lease(), serve_one(&mut receiver));
        lease.unwrap().give_back(42);
        match receiver.try_recv() {
            Ok(LeaseMessage::Return { records, .. }) => assert_eq!(records, 42),
            other => panic!("expected a return, got {other:?}"),
        }
        assert!(receiver.try_recv().is_err(), "one message per lease");
    }

    #[tokio::test]
    async fn a_lease_dropped_without_giving_back_reports_its_instance_lost() {
        let (lender, mut receiver) = Lender::new();
        let (lease, ()) = tokio::join!(lender.lease(), serve_one(&mut receiver));
        let task = tokio::spawn(async move {
            let _lease = lease;
            panic!("a batch task panics while holding its lease");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(matches!(receiver.try_recv(), Ok(LeaseMessage::Lost)));
        assert!(receiver.try_recv().is_err(), "one message per lease");
    }

    #[tokio::test]
    async fn a_want_the_pipeline_drops_ends_the_wait_without_a_lease() {
        let (lender, mut receiver) = Lender::new();
        let refuse = async {
            match receiver.recv().await {
                Some(LeaseMessage::Want(reply)) => drop(reply),
                other => panic!("expected a want, got {other:?}"),
            }
        };
        let (lease, ()) = tokio::join!(lender.lease(), refuse);
        assert!(lease.is_none());
    }
}
