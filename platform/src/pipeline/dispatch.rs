//! Which queued batch runs next, and in which order finished batches are applied.
//!
//! Batches queue per split (Kafka partition, queue, object version) in arrival order. A
//! split's oldest waiting batch may start when `scaling.ordering` allows:
//!
//! | ordering    | the head of a split may start when                                  |
//! |-------------|---------------------------------------------------------------------|
//! | `partition` | no batch of the split is running                                    |
//! | `key`       | no running batch of the split holds one of its keys (keyless records never conflict) |
//! | `none`      | always                                                              |
//!
//! Splits take turns (round robin), so a busy partition does not starve the others.
//!
//! Finished batches are applied — rows to the Parquet sink, positions to the pending
//! checkpoint — strictly in their split's arrival order, whatever order they finish in: a
//! finished batch waits for every earlier batch of its split. So committed positions never
//! pass a batch that has not finished, and the output keeps the input's order. After a
//! batch of a split fails, nothing later of that split is applied (it stays unacknowledged
//! and is redelivered).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use sluice_connectors::SplitId;

use crate::batcher::Batch;
use crate::spec::Ordering;

/// A started batch's place in its split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ticket {
    pub split: SplitId,
    seq: u64,
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    batch: Batch,
    keys: HashSet<u64>,
}

#[derive(Debug)]
struct Lane<T> {
    next_seq: u64,
    next_apply: u64,
    waiting: VecDeque<Waiting>,
    /// seq → (keys, records)
    running: BTreeMap<u64, (HashSet<u64>, usize)>,
    done: BTreeMap<u64, T>,
    failed: bool,
}

impl<T> Lane<T> {
    fn new() -> Self {
        Self {
            next_seq: 0,
            next_apply: 0,
            waiting: VecDeque::new(),
            running: BTreeMap::new(),
            done: BTreeMap::new(),
            failed: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty() && self.done.is_empty()
    }

    fn head_may_start(&self, ordering: Ordering) -> bool {
        let Some(head) = self.waiting.front() else {
            return false;
        };
        if self.failed {
            return false;
        }
        match ordering {
            Ordering::Partition => self.running.is_empty(),
            Ordering::Key => self
                .running
                .values()
                .all(|(keys, _)| keys.is_disjoint(&head.keys)),
            Ordering::None => true,
        }
    }
}

/// Queued, running and finished-but-unapplied batches of one job. `T` is what a finished
/// batch hands back.
#[derive(Debug)]
pub(super) struct Dispatcher<T> {
    ordering: Ordering,
    lanes: BTreeMap<SplitId, Lane<T>>,
    /// The split that started a batch last (round robin).
    last_started: Option<SplitId>,
    queued_batches: usize,
    queued_records: usize,
    queued_bytes: usize,
    running_batches: usize,
    running_records: usize,
}

impl<T> Dispatcher<T> {
    pub(super) fn new(ordering: Ordering) -> Self {
        Self {
            ordering,
            lanes: BTreeMap::new(),
            last_started: None,
            queued_batches: 0,
            queued_records: 0,
            queued_bytes: 0,
            running_batches: 0,
            running_records: 0,
        }
    }

    /// Queues a batch behind the earlier ones of its split.
    pub(super) fn enqueue(&mut self, batch: Batch) {
        let keys = if self.ordering == Ordering::Key {
            batch
                .events
                .iter()
                .filter_map(|event| event.key.as_ref().map(|key| hash_key(key)))
                .collect()
        } else {
            HashSet::new()
        };
        self.queued_batches += 1;
        self.queued_records += batch.events.len();
        self.queued_bytes += batch.bytes;
        let lane = self.lanes.entry(batch.split()).or_insert_with(Lane::new);
        let seq = lane.next_seq;
        lane.next_seq += 1;
        lane.waiting.push_back(Waiting { seq, batch, keys });
    }

    /// Whether some queued batch may start now.
    pub(super) fn has_startable(&self) -> bool {
        self.lanes
            .values()
            .any(|lane| lane.head_may_start(self.ordering))
    }

    /// Starts the next batch allowed to run, taking splits in turn.
    pub(super) fn start_next(&mut self) -> Option<(Ticket, Batch)> {
        let split = {
            let after = self.last_started.as_ref();
            let later = self
                .lanes
                .iter()
                .filter(|(split, _)| after.is_none_or(|last| *split > last));
            let earlier = self
                .lanes
                .iter()
                .filter(|(split, _)| after.is_some_and(|last| *split <= last));
            later
                .chain(earlier)
                .find(|(_, lane)| lane.head_may_start(self.ordering))
                .map(|(split, _)| split.clone())?
        };
        let lane = self.lanes.get_mut(&split)?;
        let waiting = lane.waiting.pop_front()?;
        let records = waiting.batch.events.len();
        lane.running.insert(waiting.seq, (waiting.keys, records));
        self.queued_batches -= 1;
        self.queued_records -= records;
        self.queued_bytes -= waiting.batch.bytes;
        self.running_batches += 1;
        self.running_records += records;
        self.last_started = Some(split.clone());
        let ticket = Ticket {
            split,
            seq: waiting.seq,
        };
        Some((ticket, waiting.batch))
    }

    /// Records that `ticket`'s batch finished with `result`; returns the results now
    /// applicable, in their split's order.
    pub(super) fn finish(&mut self, ticket: &Ticket, result: T) -> Vec<T> {
        let mut applicable = Vec::new();
        let Some(lane) = self.lanes.get_mut(&ticket.split) else {
            return applicable;
        };
        if let Some((_, records)) = lane.running.remove(&ticket.seq) {
            self.running_batches -= 1;
            self.running_records -= records;
        }
        if !lane.failed {
            lane.done.insert(ticket.seq, result);
            while let Some(result) = lane.done.remove(&lane.next_apply) {
                applicable.push(result);
                lane.next_apply += 1;
            }
        }
        if lane.is_empty() {
            self.lanes.remove(&ticket.split);
        }
        applicable
    }

    /// Records that `ticket`'s batch failed: nothing of its split from it on is applied.
    pub(super) fn fail(&mut self, ticket: &Ticket) {
        let Some(lane) = self.lanes.get_mut(&ticket.split) else {
            return;
        };
        if let Some((_, records)) = lane.running.remove(&ticket.seq) {
            self.running_batches -= 1;
            self.running_records -= records;
        }
        lane.failed = true;
        lane.done.clear();
        for waiting in lane.waiting.drain(..) {
            self.queued_batches -= 1;
            self.queued_records -= waiting.batch.events.len();
            self.queued_bytes -= waiting.batch.bytes;
        }
    }

    pub(super) fn queued_batches(&self) -> usize {
        self.queued_batches
    }

    /// Payload bytes of the queued batches.
    pub(super) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    #[cfg(test)]
    pub(super) fn running_batches(&self) -> usize {
        self.running_batches
    }

    /// Records queued or running.
    pub(super) fn records(&self) -> usize {
        self.queued_records + self.running_records
    }

    /// Batches that could run at once now: the running ones plus the queued ones the
    /// ordering rule would let start if instances were free.
    pub(super) fn lanes(&self) -> usize {
        let startable: usize = match self.ordering {
            Ordering::Partition => self
                .lanes
                .values()
                .filter(|lane| !lane.failed && lane.running.is_empty() && !lane.waiting.is_empty())
                .count(),
            Ordering::Key | Ordering::None => self
                .lanes
                .values()
                .filter(|lane| !lane.failed)
                .map(|lane| lane.waiting.len())
                .sum(),
        };
        self.running_batches + startable
    }

    /// Nothing queued and nothing running.
    pub(super) fn is_idle(&self) -> bool {
        self.queued_batches == 0 && self.running_batches == 0
    }
}

fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
