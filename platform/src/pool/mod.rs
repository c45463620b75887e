//! A job's pool of function instances: 0..`max_instances` runners, each holding at most
//! one warm instance, leased to one invocation at a time.
//!
//! ```text
//! every 500 ms, and at once (at most every 50 ms) when work waits for an instance:
//!                desired = autoscaler.desired(load)          (autoscaler.rs)
//!                stop idle instances past idle_timeout, down to min_instances
//!                give back idle instances when other jobs wait (node.rs)
//!                keep min_instances started and warm
//! invocation:    lease()   → an idle warm runner, or a new one (a cold start) while
//!                            instances < desired and the node has a slot
//! its end:       release() → back to idle (stream mode, still warm) or gone
//! ```
//!
//! Invariants: an instance with an invocation in flight is never stopped by the pool (it is
//! outside the pool while leased); every runner holds one node slot from lease or warm-up
//! until it is dropped or stopped; exec-mode runners hold no process between batches, so
//! they are released at once (scale to zero is immediate there). Stopping an idle instance
//! (SIGTERM, grace, SIGKILL) runs in the background so the data path never waits for it;
//! [`InstancePool::shutdown`] waits for all of them.

pub mod autoscaler;
pub mod node;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::function::FunctionRunner;
use crate::spec::{FunctionMode, ScalingSpec};
use autoscaler::{Autoscaler, Load};
use node::NodeCapacity;

/// Least time between two computations of the desired count when work waits for an
/// instance (the maintenance tick computes it every 500 ms regardless).
pub const RESCALE_SPACING: Duration = Duration::from_millis(50);

/// A warm runner waiting for a batch.
#[derive(Debug)]
struct Idle {
    runner: FunctionRunner,
    since: Instant,
}

/// One job's instances.
#[derive(Debug)]
pub struct InstancePool {
    job: String,
    /// Never runs a batch itself: new runners are its siblings.
    template: FunctionRunner,
    scaling: ScalingSpec,
    mode: FunctionMode,
    node: Arc<NodeCapacity>,
    autoscaler: Autoscaler,
    desired: u32,
    /// When the desired count was last computed.
    rescaled_at: Option<Instant>,
    /// Most recently used last: leases take the warmest.
    idle: Vec<Idle>,
    busy: u32,
    /// The most `busy` has been.
    busy_peak: u32,
    stopping: JoinSet<()>,
}

impl InstancePool {
    pub fn new(
        job: &str,
        template: FunctionRunner,
        mode: FunctionMode,
        scaling: ScalingSpec,
        node: Arc<NodeCapacity>,
    ) -> Self {
        Self {
            job: job.to_owned(),
            template,
            autoscaler: Autoscaler::new(&scaling),
            desired: scaling.min_instances,
            rescaled_at: None,
            scaling,
            mode,
            node,
            idle: Vec::new(),
            busy: 0,
            busy_peak: 0,
            stopping: JoinSet::new(),
        }
    }

    /// Instances busy or idle (each holds a node slot).
    pub fn instances(&self) -> u32 {
        self.busy + self.idle.len() as u32
    }

    pub fn busy(&self) -> u32 {
        self.busy
    }

    /// The most instances busy at once so far.
    pub fn busy_peak(&self) -> u32 {
        self.busy_peak
    }

    fn lend(&mut self, runner: FunctionRunner) -> FunctionRunner {
        self.busy += 1;
        self.busy_peak = self.busy_peak.max(self.busy);
        runner
    }

    pub fn idle(&self) -> u32 {
        self.idle.len() as u32
    }

    pub fn desired(&self) -> u32 {
        self.desired
    }

    /// Process ids of the idle warm instances.
    pub fn idle_pids(&self) -> Vec<u32> {
        self.idle
            .iter()
            .filter_map(|idle| idle.runner.warm_pid())
            .collect()
    }

    /// Records per second one busy instance handles, once measured.
    pub fn instance_rate(&self) -> Option<f64> {
        self.autoscaler.rate()
    }

    /// Whether waiting work may recompute the desired count now: below `max_instances` and
    /// not within [`RESCALE_SPACING`] of the last computation.
    pub fn rescale_due(&self, now: Instant) -> bool {
        self.instances() < self.scaling.max_instances
            && self
                .rescaled_at
                .is_none_or(|at| now.saturating_duration_since(at) >= RESCALE_SPACING)
    }

    /// Recomputes the desired count for `load` (scale-up takes effect at once).
    pub fn rescale(&mut self, now: Instant, load: Load) -> u32 {
        self.rescaled_at = Some(now);
        let desired = self.autoscaler.desired(now, load);
        if desired != self.desired {
            debug!(job = %self.job, from = self.desired, to = desired, work = load.work_records, lanes = load.lanes, "desired instance count changed");
        }
        self.desired = desired;
        desired
    }

    /// How many instances the pool may lend now: the desired count, and at least one
    /// (work that asks is waiting, even between ticks), at most `max_instances`.
    pub fn capacity(&self) -> u32 {
        self.desired.max(1).min(self.scaling.max_instances.max(1))
    }

    /// A runner for one invocation: the warmest idle one, or a new one while the pool is
    /// below its [capacity](Self::capacity) and the node has a free slot. `None`: wait
    /// for a busy one.
    pub fn lease(&mut self) -> Option<FunctionRunner> {
        if let Some(idle) = self.idle.pop() {
            return Some(self.lend(idle.runner));
        }
        if self.instances() < self.capacity() && self.node.try_acquire(&self.job) {
            let runner = self.template.sibling();
            return Some(self.lend(runner));
        }
        None
    }

    /// Takes a runner back after its invocation: `records` handled in `busy` time. A
    /// stream-mode runner whose instance is still warm waits for the next batch; any other
    /// gives its node slot back.
    pub fn release(&mut self, runner: FunctionRunner, records: usize, busy: Duration) {
        self.busy = self.busy.saturating_sub(1);
        self.observe(records, busy);
        if self.mode == FunctionMode::Stream && runner.warm_pid().is_some() {
            self.idle.push(Idle {
                runner,
                since: Instant::now(),
            });
        } else {
            self.node.release(&self.job);
        }
    }

    /// Counts `records` handled in `busy` time by a runner that stays lent (it went
    /// from one invocation straight to the next).
    pub fn observe(&mut self, records: usize, busy: Duration) {
        self.autoscaler.observe(records, busy);
    }

    /// Gives back a runner lost with its lease (the batch's task panicked).
    pub fn forget_busy(&mut self) {
        self.busy = self.busy.saturating_sub(1);
        self.node.release(&self.job);
    }

    /// The periodic housekeeping: stops instances idle past `idle_timeout` (and, when
    /// other jobs wait for node slots, idle instances above this job's fair share), never
    /// going below `min_instances`; then starts instances up to `min_instances`.
    pub async fn maintain(&mut self, now: Instant) {
        let min = self.scaling.min_instances;
        // Oldest idle first.
        let mut index = 0;
        while index < self.idle.len() && self.instances() > min {
            let idle_for = now.saturating_duration_since(self.idle[index].since);
            let timed_out = idle_for >= self.scaling.idle_timeout;
            if timed_out || self.node.over_fair_share(&self.job) {
                let idle = self.idle.remove(index);
                let reason = if timed_out {
                    "idle timeout"
                } else {
                    "node capacity needed by other jobs"
                };
                info!(job = %self.job, pid = idle.runner.warm_pid(), idle_ms = idle_for.as_millis() as u64, reason, "stopping idle function instance");
                self.stop(idle.runner);
            } else {
                index += 1;
            }
        }
        while self.instances() < min && self.node.try_acquire(&self.job) {
            let mut runner = self.template.sibling();
            match runner.warm_up().await {
                Ok(()) => self.idle.insert(0, Idle { runner, since: now }),
                Err(error) => {
                    warn!(job = %self.job, %error, "could not start a function instance to keep warm");
                    self.node.release(&self.job);
                    break;
                }
            }
        }
        // Stop tasks that finished are done with.
        while self.stopping.try_join_next().is_some() {}
    }

    fn stop(&mut self, mut runner: FunctionRunner) {
        self.node.release(&self.job);
        self.stopping.spawn(async move { runner.shutdown().await });
    }

    /// Stops every idle instance and waits for all stops to finish. Busy runners are the
    /// caller's to finish first.
    pub async fn shutdown(&mut self) {
        for idle in std::mem::take(&mut self.idle) {
            self.stop(idle.runner);
        }
        while self.stopping.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests;
