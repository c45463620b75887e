//! Intake: events from the source into batches. Consumes until shutdown, the end of a
//! finite source or a batch failure, while less than `QUEUE_BYTES` waits in batches;
//! drops what a commit marker already covers, and duplicate AMQP messages (acknowledged
//! only); starts batches and commits as they fall due.

use std::time::{Duration, Instant};

use sluice_connectors::Event;
use tracing::{debug, info};

use super::{JobError, Pipeline};
use crate::batcher::Batch;

/// How often the autoscaler and the idle-instance reaper run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);
/// Intake pauses once this many payload bytes wait in batches for an instance, per
/// instance the job may run (`scaling.max_instances`), and at most [`QUEUE_BYTES`]. A
/// broker hands over one partition's backlog in chunks, so with several instances the
/// queue must hold more than one chunk of one partition for the next partition's batches
/// to reach free instances; a single instance only ever needs the next batch ready.
/// Everything waiting here is resident memory (the events and their payloads), so the
/// queue is no deeper than the instances can use.
const QUEUE_BYTES_PER_INSTANCE: usize = 8 << 20;
const QUEUE_BYTES: usize = 32 << 20;
/// Batches that may always wait, however large (one more than the job's instances, up to
/// this), and the most that may wait at all.
const QUEUE_BATCHES_MIN: usize = 4;
const QUEUE_BATCHES_MAX: usize = 4096;

impl Pipeline<'_> {
    /// Drops events a commit marker already covers (see [`Committer::already_committed`]).
    fn skip_committed(&mut self, mut events: Vec<Event>) -> Vec<Event> {
        let before = events.len();
        let (committer, pending) = (&self.committer, &mut self.pending);
        let mut current = None;
        events.retain(|event| {
            let split = event.origin.split_cached(&mut current);
            let written = committer.already_committed(event, split);
            if written && event.origin.needs_ack_when_skipped() {
                // Acknowledged with the next commit, so the source can finish the split
                // (an object is done only once every line is acknowledged); an `Err`
                // means the position is pending already.
                let _ = pending.record(split, event.origin.position());
            }
            !written
        });
        let skipped = before - events.len();
        if !self.pending.is_empty() && self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        if skipped > 0 {
            self.stats.skipped_committed += skipped as u64;
            debug!(job = %self.spec.name, skipped, "skipped redelivered records whose output is already committed");
        }
        events
    }

    /// Counts `count` events arriving `now` into the current burst, which starts afresh
    /// after a quiet spell of `batch.max_idle` (see [`Pipeline::drained`]).
    fn note_arrival(&mut self, count: usize, now: Instant) {
        if count == 0 {
            return;
        }
        if self
            .last_event_at
            .is_some_and(|last| now.duration_since(last) >= self.spec.batch.max_idle)
        {
            self.burst = 0;
        }
        self.burst = self.burst.saturating_add(count);
        self.last_event_at = Some(now);
    }

    /// Batches `events`; a duplicate AMQP message (see `message_ids`) is not batched but
    /// queued, in its split's order, to be acknowledged only.
    fn take(&mut self, events: Vec<Event>) -> Result<(), JobError> {
        if self.message_ids.is_none() {
            let full = self.batcher.push(events, Instant::now())?;
            self.enqueue(full);
            return Ok(());
        }
        let mut run = Vec::with_capacity(events.len());
        for event in events {
            let duplicate = self
                .message_ids
                .as_mut()
                .is_some_and(|ids| ids.is_duplicate(&event));
            if !duplicate {
                run.push(event);
                continue;
            }
            let now = Instant::now();
            let split = event.origin.split();
            let full = self.batcher.push(std::mem::take(&mut run), now)?;
            self.enqueue(full);
            let open = self.batcher.cut_split(&split);
            self.enqueue(open.into_iter().collect());
            debug!(job = %self.spec.name, origin = ?event.origin, "duplicate message: its message_id was already processed; acknowledging it without running it");
            self.stats.duplicates += 1;
            let position = event.origin.position();
            self.enqueue(vec![Batch::acknowledge_only(split, position, now)?]);
        }
        let full = self.batcher.push(run, Instant::now())?;
        self.enqueue(full);
        Ok(())
    }

    /// How many batches may always wait, and how many payload bytes may wait at most.
    fn queue_limits(&self) -> (usize, usize) {
        let instances = usize::try_from(self.spec.scaling.max_instances)
            .unwrap_or(usize::MAX)
            .max(1);
        (
            instances.saturating_add(1).min(QUEUE_BATCHES_MIN),
            instances
                .saturating_mul(QUEUE_BYTES_PER_INSTANCE)
                .min(QUEUE_BYTES),
        )
    }

    pub(super) fn enqueue(&mut self, batches: Vec<Batch>) {
        for batch in batches {
            self.dispatch.enqueue(batch);
        }
    }

    /// Consumes until shutdown, the end of a finite source, or a batch failure.
    pub(super) async fn intake(&mut self) -> Result<(), JobError> {
        let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the source was read in the last turn: an open batch counts as idle
        // (`batch.max_idle`) only while it is, and from when reading resumed.
        let mut was_reading = true;
        loop {
            if self.failure.is_some() {
                return Ok(());
            }
            let queued = self.dispatch.queued_batches();
            let (min_batches, max_bytes) = self.queue_limits();
            let room = queued < min_batches
                || (queued < QUEUE_BATCHES_MAX && self.dispatch.queued_bytes() < max_bytes);
            if room && !was_reading {
                self.batcher.restart_idle_clocks(Instant::now());
            }
            was_reading = room;
            let batch_deadline = self.batcher.deadline(room);
            let flush_deadline = self.commit_deadline();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    info!(job = %self.spec.name, "shutdown requested: finishing the open batches");
                    return Ok(());
                }
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    self.finished(done)?;
                }
                Some(message) = self.leases.recv() => self.lend(message),
                () = sleep_until(batch_deadline) => {
                    let due = self.batcher.cut_if_due(Instant::now(), room);
                    self.enqueue(due);
                }
                () = sleep_until(flush_deadline) => {}
                _ = maintenance.tick() => self.maintain().await,
                events = self.source.next_events(), if room => match events? {
                    Some(events) => {
                        self.note_arrival(events.len(), Instant::now());
                        let events = self.skip_committed(events);
                        self.take(events)?;
                    }
                    None => return Ok(()),
                },
            }
            self.start_batches();
            // A redo commits its whole range at once, with the range's own boundaries
            // (`commit_deadline` is none meanwhile).
            if self.commit_due(Instant::now()) && !self.committer.redoing() {
                self.commit().await?;
                // Nothing was read while committing.
                self.batcher.restart_idle_clocks(Instant::now());
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
