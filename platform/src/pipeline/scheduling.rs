//! The concurrent part of the pipeline: starting queued batches as tasks, lending them
//! instances one invocation at a time (`leases`), taking finished batches back (outcome
//! applied in its split's order), and the periodic autoscaler turn. See the parent module
//! for the loop that drives them.
//!
//! Invariant: a batch's effects (rows, dead letters, positions) reach the sink and the
//! pending checkpoint only through [`Pipeline::apply`], called in split order by
//! [`Pipeline::finished`]; nothing here acknowledges anything.

use std::time::{Duration, Instant};

use futures::FutureExt as _;

use super::batch_runner::{BatchOutcome, run_batch};
use super::leases::LeaseMessage;
use super::{Finished, JobError, Pipeline};
use crate::pool::autoscaler::Load;
use crate::status::InstanceStatus;

/// Batch tasks beyond the instances the pool may lend: one encoding its input ahead and
/// one decoding its output behind while the instances invoke. More would only hold more
/// batches in memory (the instances bound the rate). Measured with one instance and a
/// pyarrow function: 2 beat 1 (BENCHMARKS.md, "Instances lent per invocation").
const TASKS_AHEAD: usize = 2;

impl Pipeline<'_> {
    /// Lends instances to the tasks waiting for one, then starts queued batches as tasks
    /// while the ordering rule allows and the pool could keep them busy.
    pub(super) fn start_batches(&mut self) {
        self.serve_leases();
        if self.failure.is_some() || self.intake_stopped {
            return;
        }
        while self.dispatch.has_startable()
            && self.running.len() < self.pool.capacity() as usize + TASKS_AHEAD
        {
            let Some((ticket, batch)) = self.dispatch.start_next() else {
                return;
            };
            let context = self.context.clone();
            self.running.spawn(async move {
                let run = std::panic::AssertUnwindSafe(run_batch(&context, batch));
                match run.catch_unwind().await {
                    Ok(result) => (ticket, result),
                    // A lease the task held reported its instance lost as it unwound.
                    Err(_panic) => (
                        ticket,
                        Err(JobError::Internal("a batch task panicked".into())),
                    ),
                }
            });
        }
    }

    /// Takes one message from the batch tasks about instances (see `leases`).
    pub(super) fn lend(&mut self, message: LeaseMessage) {
        match message {
            // Served by `serve_leases`, after this turn.
            LeaseMessage::Wanted => {}
            LeaseMessage::Return {
                runner,
                records,
                busy,
            } => self.pool.release(*runner, records, busy),
            LeaseMessage::HandedOn { records, busy } => self.pool.observe(records, busy),
            LeaseMessage::Lost => self.pool.forget_busy(),
        }
    }

    /// Takes every message already sent, then lends instances to waiting tasks, oldest
    /// first, while the pool has them.
    fn serve_leases(&mut self) {
        while let Ok(message) = self.leases.try_recv() {
            self.lend(message);
        }
        let line = self.line.clone();
        let mut line = line.lock();
        while let Some(reply) = line.pop_front() {
            if reply.is_closed() {
                continue;
            }
            let runner = match self.pool.lease() {
                Some(runner) => runner,
                // A task waits and no instance is free: scale up now rather than at the
                // next maintenance tick (a higher count takes effect at once).
                None if self.pool.rescale_due(Instant::now()) => {
                    self.rescale();
                    match self.pool.lease() {
                        Some(runner) => runner,
                        None => {
                            line.push_front(reply);
                            return;
                        }
                    }
                }
                None => {
                    line.push_front(reply);
                    return;
                }
            };
            if let Err(runner) = reply.send(runner) {
                // The task stopped waiting between the check and the send.
                self.pool.release(runner, 0, Duration::ZERO);
            }
        }
    }

    /// Takes a finished batch: its outcome (and any earlier-finished ones of its split
    /// now in order) applied. Its instances came back through `leases` before it ended.
    pub(super) fn finished(
        &mut self,
        done: Result<Finished, tokio::task::JoinError>,
    ) -> Result<(), JobError> {
        let (ticket, result) = match done {
            Ok(finished) => finished,
            Err(error) => {
                // Tasks are never aborted; a lost task is a bug (a lease it held reported
                // its instance lost). Its split stays unacknowledged from the lost batch on.
                self.failure.get_or_insert(JobError::Internal(format!(
                    "a batch task was lost: {error}"
                )));
                return Ok(());
            }
        };
        let applicable = match result {
            Ok(outcome) => self.dispatch.finish(&ticket, outcome),
            Err(error) => {
                self.dispatch.fail(&ticket);
                self.failure.get_or_insert(error);
                Vec::new()
            }
        };
        // The next batch starts before this one's rows are encoded to Parquet, so the
        // function and the encoding run side by side instead of in turn. Starting a
        // batch changes no output and no position: only `apply` does.
        self.start_batches();
        for outcome in applicable {
            self.apply(outcome)?;
        }
        self.publish_status();
        Ok(())
    }

    /// Makes a finished batch's effects part of the next commit: rows to the sink (Parquet
    /// encoding, CPU work, under `block_in_place`), dead letters, positions.
    fn apply(&mut self, outcome: BatchOutcome) -> Result<(), JobError> {
        let sink = &mut self.sink;
        tokio::task::block_in_place(|| {
            outcome
                .rows
                .iter()
                .try_for_each(|rows| sink.write(&outcome.split, rows))
        })?;
        for dead_letter in outcome.dead_letters {
            self.dead_letters.push(dead_letter);
        }
        if self.pending.is_empty() {
            self.pending_since = Some(Instant::now());
        }
        self.pending.extend(outcome.checkpoint)?;
        if let Some(ids) = self.message_ids.as_mut() {
            ids.applied(&outcome.message_ids);
        }
        self.stats.add_batch(&outcome.stats);
        if !outcome.cold_starts.is_empty() {
            self.status.update(|status| {
                for init in &outcome.cold_starts {
                    status.record_cold_start(*init);
                }
            });
        }
        Ok(())
    }

    /// The autoscaler's turn: desired count from the backlog, idle instances stopped.
    pub(super) async fn maintain(&mut self) {
        self.rescale();
        self.pool.maintain(Instant::now()).await;
        self.publish_status();
    }

    /// The autoscaler's desired count from the backlog and the batches that could run.
    fn rescale(&mut self) {
        let load = Load {
            work_records: self.source.backlog().unwrap_or(0) + self.dispatch.records() as u64,
            lanes: u32::try_from(self.dispatch.lanes()).unwrap_or(u32::MAX),
        };
        self.pool.rescale(Instant::now(), load);
    }

    pub(super) fn publish_status(&self) {
        let instances = InstanceStatus {
            busy: self.pool.busy(),
            busy_peak: self.pool.busy_peak(),
            idle: self.pool.idle(),
            desired: self.pool.desired(),
            min: self.spec.scaling.min_instances,
            max: self.spec.scaling.max_instances,
            idle_pids: self.pool.idle_pids(),
        };
        let backlog = self.source.backlog();
        let in_flight = self.dispatch.records() as u64;
        let rate = self.pool.instance_rate();
        let stats = self.stats;
        self.status.update(|status| {
            status.instances = instances;
            status.backlog = backlog;
            status.in_flight_records = in_flight;
            status.instance_rate = rate;
            status.stats = stats;
        });
    }
}
