//! Cuts the stream of events into batches, like Lambda's batch size and batching window.
//!
//! The batcher keeps one open batch per split (a Kafka partition, a queue, a sample
//! file), so a batch never mixes splits: the output rows of a batch can be attributed to
//! one range of one split, which the exactly-once commit protocol names its objects from
//! (the function protocol has no row → record mapping).
//!
//! A batch closes when it holds `max_records` events, when the next event would take it
//! past `max_bytes`, when `max_wait` has passed since its first event, or when no event
//! reached it for `max_idle` while the source was being read (its split went quiet: the
//! end of a backlog or of a burst need not wait out `max_wait`). A single event larger
//! than `max_bytes` forms a batch of its own rather than being refused: the limit bounds
//! batches, it never drops data. [`Batcher::deadline`] is the earliest deadline of the
//! open batches.
//!
//! Idle time counts only while the caller reads the source: a caller that stops reading
//! (its queue is full, it is committing) says so with `reading = false`, and calls
//! [`Batcher::restart_idle_clocks`] when it reads again, so a pause of its own is never
//! taken for a quiet split.
//!
//! Memory: the open batches of all splits together hold at most [`OPEN_BYTES`] of event
//! bytes (plus one event). Past that the largest open batch is cut early, as if it were
//! full, so a job reading many partitions at once (each with a backlog, interleaved by
//! the broker) holds a bounded amount, not `max_bytes` per partition.
//!
//! Every batch carries the [`CheckpointDelta`] of the positions it covers (one split),
//! so positions travel with the data they belong to.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_connectors::{CheckpointDelta, CheckpointError, Event, SplitId};

use crate::spec::BatchSpec;

/// Most event bytes ([`Event::size_bytes`]) the open batches of all splits hold together
/// before the largest is cut early.
pub const OPEN_BYTES: usize = 16 << 20;

/// Events a new open batch has room for up front (or `max_records`, if fewer). Growing the
/// vector by doubling instead moved every event about twice, into freshly faulted pages
/// each time: a third of cutting a batch of 10,000 (`bench/data_path_cost.rs`). Room the
/// batch does not fill is address space the process never touches, not memory.
const RESERVED_EVENTS: usize = 16_384;

/// Events of one split to run through the function together, and the positions they
/// cover.
#[derive(Debug)]
pub struct Batch {
    /// The split every event and the checkpoint belong to.
    pub split: SplitId,
    pub events: Vec<Event>,
    /// Sum of [`Event::size_bytes`].
    pub bytes: usize,
    pub checkpoint: CheckpointDelta,
    /// When the first event arrived.
    pub opened_at: Instant,
}

impl Batch {
    /// An empty batch with room for `capacity` events.
    fn open(split: SplitId, now: Instant, capacity: usize) -> Self {
        Self {
            split,
            events: Vec::with_capacity(capacity),
            bytes: 0,
            checkpoint: CheckpointDelta::new(),
            opened_at: now,
        }
    }

    /// The split this batch's events come from (every event of a batch shares it), or
    /// for an acknowledge-only batch without events, its checkpoint's split.
    pub fn split(&self) -> SplitId {
        self.split.clone()
    }

    /// A batch with no events that only carries `position` of `split` to the
    /// acknowledgement (a duplicate message that is not run again).
    pub fn acknowledge_only(
        split: SplitId,
        position: i64,
        now: Instant,
    ) -> Result<Self, CheckpointError> {
        let mut batch = Self::open(split, now, 0);
        batch.checkpoint.record(&batch.split, position)?;
        Ok(batch)
    }
}

/// An open batch, and since when it counts as idle: its last event, or the last time
/// the caller started reading again, whichever is later.
#[derive(Debug)]
struct Open {
    batch: Batch,
    active_at: Instant,
}

/// Accumulates events into at most one open batch per split.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_bytes: usize,
    max_wait: Duration,
    max_idle: Duration,
    /// See [`OPEN_BYTES`].
    max_open_bytes: usize,
    open: BTreeMap<SplitId, Open>,
    /// Sum of the open batches' bytes.
    open_bytes: usize,
    /// Room a new open batch reserves; see [`RESERVED_EVENTS`].
    reserved_events: usize,
}

impl Batcher {
    pub fn new(spec: &BatchSpec) -> Self {
        Self {
            max_records: spec.max_records.max(1),
            max_bytes: usize::try_from(spec.max_bytes).unwrap_or(usize::MAX).max(1),
            max_wait: spec.max_wait,
            max_idle: spec.max_idle,
            max_open_bytes: OPEN_BYTES,
            open: BTreeMap::new(),
            open_bytes: 0,
            reserved_events: spec.max_records.clamp(1, RESERVED_EVENTS),
        }
    }

    /// This batcher with another limit on the open batches' bytes than [`OPEN_BYTES`].
    #[cfg(test)]
    fn with_open_bytes(mut self, max_open_bytes: usize) -> Self {
        self.max_open_bytes = max_open_bytes.max(1);
        self
    }

    /// Removes the open batch of `split`, keeping the byte count.
    fn take(&mut self, split: &SplitId) -> Option<Batch> {
        let open = self.open.remove(split)?;
        self.open_bytes -= open.batch.bytes;
        Some(open.batch)
    }

    /// The split whose open batch holds the most bytes.
    fn largest(&self) -> Option<SplitId> {
        self.open
            .iter()
            .max_by_key(|(_, open)| open.batch.bytes)
            .map(|(split, _)| split.clone())
    }

    /// Adds events in arrival order and returns the batches they filled, in the order
    /// they filled. Fails only if a source delivered positions of a split out of order,
    /// which would make acknowledging unsafe.
    pub fn push(
        &mut self,
        events: Vec<Event>,
        now: Instant,
    ) -> Result<Vec<Batch>, CheckpointError> {
        let mut full = Vec::new();
        let mut current = None;
        for event in events {
            let size = event.size_bytes();
            let position = event.origin.position();
            let split = event.origin.split_cached(&mut current);
            if let Some(open) = self.open.get(split)
                && !open.batch.events.is_empty()
                && open.batch.bytes + size > self.max_bytes
                && let Some(batch) = self.take(split)
            {
                full.push(batch);
            }
            let open = match self.open.get_mut(split) {
                Some(open) => open,
                None => self.open.entry(split.clone()).or_insert_with(|| Open {
                    batch: Batch::open(split.clone(), now, self.reserved_events),
                    active_at: now,
                }),
            };
            open.active_at = now;
            let batch = &mut open.batch;
            batch.checkpoint.record(split, position)?;
            batch.bytes += size;
            batch.events.push(event);
            self.open_bytes += size;
            if batch.events.len() >= self.max_records || batch.bytes >= self.max_bytes {
                full.extend(self.take(split));
            }
            if self.open_bytes > self.max_open_bytes
                && let Some(largest) = self.largest()
            {
                full.extend(self.take(&largest));
            }
        }
        Ok(full)
    }

    /// When `open` must be cut: `max_wait` after its first event, or — while the caller
    /// is `reading` — `max_idle` after it was last active.
    fn due_at(&self, open: &Open, reading: bool) -> Instant {
        let waited = open.batch.opened_at + self.max_wait;
        if reading {
            waited.min(open.active_at + self.max_idle)
        } else {
            waited
        }
    }

    /// When the earliest open batch must be cut, if one is open; idle time counts only
    /// while the caller is `reading` the source.
    pub fn deadline(&self, reading: bool) -> Option<Instant> {
        self.open
            .values()
            .map(|open| self.due_at(open, reading))
            .min()
    }

    /// Cuts every open batch whose `max_wait` has passed, or (while `reading`) that was
    /// idle for `max_idle`, oldest first.
    pub fn cut_if_due(&mut self, now: Instant, reading: bool) -> Vec<Batch> {
        let due: Vec<SplitId> = self
            .open
            .iter()
            .filter(|(_, open)| self.due_at(open, reading) <= now)
            .map(|(split, _)| split.clone())
            .collect();
        let mut batches: Vec<Batch> = due.iter().filter_map(|split| self.take(split)).collect();
        batches.sort_by_key(|b| b.opened_at);
        batches
    }

    /// The caller reads the source again after a pause (a full queue, a commit): idle
    /// time counts from `now`, since nothing could arrive while it was not reading.
    pub fn restart_idle_clocks(&mut self, now: Instant) {
        for open in self.open.values_mut() {
            open.active_at = open.active_at.max(now);
        }
    }

    /// Cuts the open batch of `split`, if there is one.
    pub fn cut_split(&mut self, split: &SplitId) -> Option<Batch> {
        self.take(split)
    }

    /// Cuts whatever is open (shutdown, end of a finite source), oldest first.
    pub fn cut(&mut self) -> Vec<Batch> {
        let mut batches: Vec<Batch> = std::mem::take(&mut self.open)
            .into_values()
            .map(|open| open.batch)
            .collect();
        self.open_bytes = 0;
        batches.sort_by_key(|b| b.opened_at);
        batches
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_connectors::{Origin, SplitId};

    use super::*;

    /// Limits that cut by time only at `max_wait` (`max_idle` as long).
    fn spec(max_records: usize, max_bytes: u64, max_wait_ms: u64) -> BatchSpec {
        BatchSpec {
            max_bytes,
            ..idle_spec(max_records, max_wait_ms, max_wait_ms)
        }
    }

    fn idle_spec(max_records: usize, max_wait_ms: u64, max_idle_ms: u64) -> BatchSpec {
        BatchSpec {
            max_records,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(max_wait_ms),
            max_idle: Duration::from_millis(max_idle_ms),
        }
    }

    fn ms(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    fn event(partition: i32, offset: i64, payload: &str) -> Event {
        Event::from_payload(
            payload.to_owned(),
            Origin::Kafka {
                topic: Arc::from("t"),
                partition,
                offset,
            },
        )
    }

    #[test]
    fn cuts_by_record_count() {
        let mut batcher = Batcher::new(&spec(3, 1 << 20, 1000));
        let now = Instant::now();
        let events = (0..7).map(|i| event(0, i, "{}")).collect();
        let batches = batcher.push(events, now).unwrap();
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|b| b.events.len() == 3));
        let split = SplitId::kafka("t", 0);
        assert_eq!(batches[1].checkpoint.get(&split).unwrap().first, 3);
        assert_eq!(batches[1].checkpoint.get(&split).unwrap().last, 5);
        let rest = batcher.cut();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].events.len(), 1);
        assert!(batcher.is_empty());
    }

    #[test]
    fn cuts_by_bytes_before_overflowing() {
        let mut batcher = Batcher::new(&spec(100, 10, 1000));
        let now = Instant::now();
        let batches = batcher
            .push(
                vec![
                    event(0, 0, "aaaa"),
                    event(0, 1, "bbbb"),
                    event(0, 2, "cccc"),
                ],
                now,
            )
            .unwrap();
        assert_eq!(batches.len(), 1, "the third event would pass 10 bytes");
        assert_eq!(batches[0].events.len(), 2);
        assert_eq!(batches[0].bytes, 8);
        assert_eq!(batcher.cut()[0].events.len(), 1);
    }

    #[test]
    fn oversized_event_gets_its_own_batch() {
        let mut batcher = Batcher::new(&spec(100, 10, 1000));
        let now = Instant::now();
        let big = "x".repeat(50);
        let batches = batcher
            .push(
                vec![event(0, 0, "a"), event(0, 1, &big), event(0, 2, "b")],
                now,
            )
            .unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].events.len(), 1);
        assert_eq!(batches[1].events.len(), 1);
        assert_eq!(batches[1].bytes, 50);
        assert_eq!(batcher.cut()[0].events[0].origin.position(), 2);
    }

    #[test]
    fn cuts_by_wait_from_first_event() {
        let mut batcher = Batcher::new(&spec(100, 1 << 20, 500));
        let start = Instant::now();
        assert_eq!(batcher.deadline(true), None);
        assert!(
            batcher
                .push(vec![event(0, 0, "{}")], start)
                .unwrap()
                .is_empty()
        );
        let later = start + Duration::from_millis(300);
        assert!(
            batcher
                .push(vec![event(0, 1, "{}")], later)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            batcher.deadline(true),
            Some(start + Duration::from_millis(500))
        );
        assert!(
            batcher
                .cut_if_due(start + Duration::from_millis(499), true)
                .is_empty()
        );
        let batches = batcher.cut_if_due(start + Duration::from_millis(500), true);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].events.len(), 2);
        assert_eq!(batcher.deadline(true), None);
    }

    #[test]
    fn keeps_one_batch_per_split() {
        let mut batcher = Batcher::new(&spec(3, 1 << 20, 1000));
        let now = Instant::now();
        // Partitions interleave; partition 0 fills first.
        let events = vec![
            event(0, 0, "{}"),
            event(1, 0, "{}"),
            event(0, 1, "{}"),
            event(1, 1, "{}"),
            event(0, 2, "{}"),
            event(2, 7, "{}"),
        ];
        let full = batcher.push(events, now).unwrap();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].split(), SplitId::kafka("t", 0));
        assert!(
            full[0]
                .events
                .iter()
                .all(|e| e.origin.split() == SplitId::kafka("t", 0))
        );
        assert_eq!(full[0].checkpoint.iter().count(), 1, "one split per batch");
        let rest = batcher.cut();
        let splits: Vec<_> = rest.iter().map(Batch::split).collect();
        assert_eq!(splits, vec![SplitId::kafka("t", 1), SplitId::kafka("t", 2)]);
        assert_eq!(
            rest[0].checkpoint.get(&SplitId::kafka("t", 1)),
            Some(sluice_connectors::PositionRange { first: 0, last: 1 })
        );
        assert!(batcher.is_empty());
    }

    #[test]
    fn deadline_is_the_earliest_open_batch_and_only_due_batches_are_cut() {
        let mut batcher = Batcher::new(&spec(100, 1 << 20, 500));
        let start = Instant::now();
        batcher.push(vec![event(1, 0, "{}")], start).unwrap();
        let later = start + Duration::from_millis(200);
        batcher.push(vec![event(0, 0, "{}")], later).unwrap();
        assert_eq!(
            batcher.deadline(true),
            Some(start + Duration::from_millis(500))
        );
        let due = batcher.cut_if_due(start + Duration::from_millis(600), true);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].split(), SplitId::kafka("t", 1));
        assert_eq!(
            batcher.deadline(true),
            Some(later + Duration::from_millis(500))
        );
        let due = batcher.cut_if_due(later + Duration::from_millis(500), true);
        assert_eq!(due[0].split(), SplitId::kafka("t", 0));
        assert!(batcher.is_empty());
    }

    #[test]
    fn byte_limit_counts_per_split() {
        let mut batcher = Batcher::new(&spec(100, 8, 1000));
        let now = Instant::now();
        let full = batcher
            .push(
                vec![
                    event(0, 0, "aaaa"),
                    event(1, 0, "bbbb"),
                    event(0, 1, "cccc"),
                ],
                now,
            )
            .unwrap();
        assert_eq!(full.len(), 1, "partition 0 reached 8 bytes");
        assert_eq!(full[0].events.len(), 2);
        assert_eq!(batcher.cut()[0].bytes, 4);
    }

    #[test]
    fn open_batches_of_all_splits_stay_within_the_byte_budget() {
        // 40 partitions interleaved, each far from its own limits: without the budget
        // every partition would hold an open batch of 10 events.
        let mut batcher = Batcher::new(&spec(1000, 1 << 20, 60_000)).with_open_bytes(100);
        let now = Instant::now();
        let events: Vec<Event> = (0..10)
            .flat_map(|offset| (0..40).map(move |partition| event(partition, offset, "0123456789")))
            .collect();
        let mut cut = Vec::new();
        for event in events {
            cut.extend(batcher.push(vec![event], now).unwrap());
            assert!(
                batcher.open_bytes <= 100,
                "{} bytes open",
                batcher.open_bytes
            );
            let counted: usize = batcher.open.values().map(|open| open.batch.bytes).sum();
            assert_eq!(batcher.open_bytes, counted);
        }
        assert!(!cut.is_empty(), "the budget cut batches early");
        // Nothing is lost or reordered: per partition, the cut batches and what is
        // still open cover every offset once, in order.
        cut.extend(batcher.cut());
        assert_eq!(batcher.open_bytes, 0);
        for partition in 0..40 {
            let offsets: Vec<i64> = cut
                .iter()
                .filter(|b| b.split() == SplitId::kafka("t", partition))
                .flat_map(|b| b.events.iter().map(|e| e.origin.position()))
                .collect();
            assert_eq!(
                offsets,
                (0..10).collect::<Vec<_>>(),
                "partition {partition}"
            );
        }
    }

    #[test]
    fn replayed_positions_are_refused() {
        let mut batcher = Batcher::new(&spec(100, 1 << 20, 500));
        let now = Instant::now();
        batcher.push(vec![event(0, 5, "{}")], now).unwrap();
        let err = batcher.push(vec![event(0, 4, "{}")], now).unwrap_err();
        assert!(err.to_string().contains("t/0"), "{err}");
    }

    #[test]
    fn a_split_that_goes_quiet_is_cut_after_max_idle() {
        let mut batcher = Batcher::new(&idle_spec(100, 2000, 100));
        let start = Instant::now();
        batcher.push(vec![event(0, 0, "{}")], start).unwrap();
        batcher
            .push(vec![event(0, 1, "{}")], ms(start, 80))
            .unwrap();
        assert_eq!(batcher.deadline(true), Some(ms(start, 180)));
        assert!(batcher.cut_if_due(ms(start, 179), true).is_empty());
        let cut = batcher.cut_if_due(ms(start, 180), true);
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].events.len(), 2);
        assert!(batcher.is_empty());
    }

    #[test]
    fn a_trickle_faster_than_max_idle_is_gathered_until_max_wait() {
        let mut batcher = Batcher::new(&idle_spec(100, 1000, 100));
        let start = Instant::now();
        let mut cut = Vec::new();
        for offset in 0..30_i64 {
            let now = ms(start, 50 * offset.unsigned_abs());
            cut.extend(batcher.cut_if_due(now, true));
            cut.extend(batcher.push(vec![event(0, offset, "{}")], now).unwrap());
        }
        // Events at 0, 50, …, 950 ms share the first batch; the one at 1000 ms finds it
        // due (max_wait) and opens the next.
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0].events.len(), 20);
        assert_eq!(batcher.deadline(true), Some(ms(start, 1450 + 100)));
    }

    #[test]
    fn idle_counts_per_split() {
        let mut batcher = Batcher::new(&idle_spec(100, 2000, 100));
        let start = Instant::now();
        batcher
            .push(vec![event(0, 0, "{}"), event(1, 0, "{}")], start)
            .unwrap();
        batcher
            .push(vec![event(1, 1, "{}")], ms(start, 90))
            .unwrap();
        let cut = batcher.cut_if_due(ms(start, 100), true);
        assert_eq!(cut.len(), 1, "partition 1 is still receiving");
        assert_eq!(cut[0].split(), SplitId::kafka("t", 0));
        assert_eq!(batcher.deadline(true), Some(ms(start, 190)));
    }

    #[test]
    fn idle_time_counts_only_while_the_caller_reads() {
        let mut batcher = Batcher::new(&idle_spec(100, 2000, 100));
        let start = Instant::now();
        batcher.push(vec![event(0, 0, "{}")], start).unwrap();
        // Not reading (queue full, committing): only max_wait applies.
        assert_eq!(batcher.deadline(false), Some(ms(start, 2000)));
        assert!(batcher.cut_if_due(ms(start, 700), false).is_empty());
        // Reading again at 700 ms: the pause is not idleness.
        batcher.restart_idle_clocks(ms(start, 700));
        assert_eq!(batcher.deadline(true), Some(ms(start, 800)));
        assert!(batcher.cut_if_due(ms(start, 799), true).is_empty());
        assert_eq!(batcher.cut_if_due(ms(start, 800), true).len(), 1);
    }

    #[test]
    fn max_idle_at_max_wait_cuts_by_time_only() {
        let mut batcher = Batcher::new(&idle_spec(100, 500, 500));
        let start = Instant::now();
        batcher.push(vec![event(0, 0, "{}")], start).unwrap();
        batcher
            .push(vec![event(0, 1, "{}")], ms(start, 400))
            .unwrap();
        assert_eq!(batcher.deadline(true), Some(ms(start, 500)));
    }
}
