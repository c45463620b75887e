//! The node-wide cap on function instances, shared fairly by every job of one Sluice
//! process.
//!
//! Every instance (busy or idle-but-warm) holds one slot. A job may take a slot while
//! the node has one free, except that once other jobs are waiting it may not grow past
//! its fair share (`ceil(limit / jobs that hold or want slots)`), so one hot job cannot
//! starve the others. A job holding more than its fair share while others wait is told
//! so ([`NodeCapacity::over_fair_share`]) and gives back idle instances; busy instances
//! are never taken away, they return their slot when their batch is done.
//!
//! The default limit is [`default_limit`]: four instances per core, because ETL functions
//! mostly wait on I/O or on the platform; `sluice run --node-instances N` sets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a refused request keeps counting as a job waiting for a slot.
const WANT_TTL: Duration = Duration::from_secs(2);

/// Instances per core when the node limit is not set.
pub const INSTANCES_PER_CORE: usize = 4;

/// [`INSTANCES_PER_CORE`] × the cores this process may use.
pub fn default_limit() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cores * INSTANCES_PER_CORE
}

/// Slots for function instances on this node.
#[derive(Debug)]
pub struct NodeCapacity {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: HashMap<String, usize>,
    /// Jobs refused a slot recently, and when.
    wanting: HashMap<String, Instant>,
}

static GLOBAL: OnceLock<Arc<NodeCapacity>> = OnceLock::new();

impl NodeCapacity {
    /// A node with room for `limit` instances (at least one).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            state: Mutex::default(),
        })
    }

    /// The process-wide capacity: `limit` if this is the first call that names one,
    /// [`default_limit`] otherwise. Every job of the process shares it.
    pub fn global(limit: Option<usize>) -> Arc<Self> {
        Arc::clone(GLOBAL.get_or_init(|| Self::new(limit.unwrap_or_else(default_limit))))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for `job` if the node has one and fairness allows; otherwise records
    /// that `job` is waiting and returns false.
    pub fn try_acquire(&self, job: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        state
            .wanting
            .retain(|_, at| now.saturating_duration_since(*at) < WANT_TTL);
        let total: usize = state.held.values().sum();
        let mine = state.held.get(job).copied().unwrap_or(0);
        let others_waiting = state.wanting.keys().any(|other| other != job);
        let granted =
            total < self.limit && !(others_waiting && mine >= fair_share(&state, self.limit, job));
        if granted {
            *state.held.entry(job.to_owned()).or_default() += 1;
            state.wanting.remove(job);
        } else {
            state.wanting.insert(job.to_owned(), now);
        }
        granted
    }

    /// Gives back one of `job`'s slots.
    pub fn release(&self, job: &str) {
        let mut state = self.state();
        if let Some(held) = state.held.get_mut(job) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.held.remove(job);
            }
        }
    }

    /// Whether other jobs are waiting while `job` holds more than its fair share.
    pub fn over_fair_share(&self, job: &str) -> bool {
        let now = Instant::now();
        let state = self.state();
        let others_waiting = state
            .wanting
            .iter()
            .any(|(other, at)| other != job && now.saturating_duration_since(*at) < WANT_TTL);
        let mine = state.held.get(job).copied().unwrap_or(0);
        others_waiting && mine > fair_share(&state, self.limit, job)
    }

    /// Slots `job` holds.
    pub fn held(&self, job: &str) -> usize {
        self.state().held.get(job).copied().unwrap_or(0)
    }
}

/// `ceil(limit / jobs that hold or want slots)`, `job` included.
fn fair_share(state: &State, limit: usize, job: &str) -> usize {
    let mut jobs: Vec<&str> = state
        .held
        .keys()
        .chain(state.wanting.keys())
        .map(String::as_str)
        .collect();
    jobs.push(job);
    jobs.sort_unstable();
    jobs.dedup();
    limit.div_ceil(jobs.len().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_job_may_use_the_whole_node() {
        let node = NodeCapacity::new(4);
        assert!((0..4).all(|_| node.try_acquire("a")));
        assert!(!node.try_acquire("a"));
        node.release("a");
        assert!(node.try_acquire("a"));
        assert_eq!(node.held("a"), 4);
    }

    #[test]
    fn a_waiting_job_gets_its_fair_share() {
        let node = NodeCapacity::new(4);
        assert!((0..4).all(|_| node.try_acquire("hot")));
        // The node is full: "cold" waits, and "hot" learns it holds too much.
        assert!(!node.try_acquire("cold"));
        assert!(node.over_fair_share("hot"));
        assert!(!node.over_fair_share("cold"));
        // "hot" gives back two idle instances; it may not take them again while "cold"
        // waits, "cold" may.
        node.release("hot");
        assert!(!node.try_acquire("hot"));
        node.release("hot");
        assert!(node.try_acquire("cold"));
        assert!(node.try_acquire("cold"));
        assert_eq!((node.held("hot"), node.held("cold")), (2, 2));
        assert!(!node.over_fair_share("hot"));
        assert!(!node.try_acquire("cold"), "the node is full");
    }

    #[test]
    fn the_limit_is_at_least_one_and_the_default_scales_with_cores() {
        assert_eq!(NodeCapacity::new(0).limit(), 1);
        assert!(default_limit() >= INSTANCES_PER_CORE);
    }
}
