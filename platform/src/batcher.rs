//! Cuts the stream of events into batches, like Lambda's batch size and batching window.
//!
//! The batcher keeps one open batch per split (a Kafka partition, a queue, a sample
//! file), so a batch never mixes splits: the output rows of a batch can be attributed to
//! one range of one split, which the exactly-once commit protocol names its objects from
//! (the function protocol has no row → record mapping).
//!
//! A batch closes when it holds `max_records` events, when the next event would take it
//! past `max_bytes`, or when `max_wait` has passed since its first event. A single event
//! larger than `max_bytes` forms a batch of its own rather than being refused: the limit
//! bounds batches, it never drops data. [`Batcher::deadline`] is the earliest deadline
//! of the open batches.
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
    fn open(split: SplitId, now: Instant) -> Self {
        Self {
            split,
            events: Vec::new(),
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
        let mut batch = Self::open(split.clone(), now);
        batch.checkpoint.record(split, position)?;
        Ok(batch)
    }
}

/// Accumulates events into at most one open batch per split.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_bytes: usize,
    max_wait: Duration,
    /// See [`OPEN_BYTES`].
    max_open_bytes: usize,
    open: BTreeMap<SplitId, Batch>,
    /// Sum of the open batches' bytes.
    open_bytes: usize,
}

impl Batcher {
    pub fn new(spec: &BatchSpec) -> Self {
        Self {
            max_records: spec.max_records.max(1),
            max_bytes: usize::try_from(spec.max_bytes).unwrap_or(usize::MAX).max(1),
            max_wait: spec.max_wait,
            max_open_bytes: OPEN_BYTES,
            open: BTreeMap::new(),
            open_bytes: 0,
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
        let batch = self.open.remove(split)?;
        self.open_bytes -= batch.bytes;
        Some(batch)
    }

    /// The split whose open batch holds the most bytes.
    fn largest(&self) -> Option<SplitId> {
        self.open
            .iter()
            .max_by_key(|(_, batch)| batch.bytes)
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
        for event in events {
            let size = event.size_bytes();
            let split = event.origin.split();
            if let Some(open) = self.open.get(&split)
                && !open.events.is_empty()
                && open.bytes + size > self.max_bytes
                && let Some(batch) = self.take(&split)
            {
                full.push(batch);
            }
            let open = self
                .open
                .entry(split.clone())
                .or_insert_with(|| Batch::open(split.clone(), now));
            open.checkpoint
                .record(split.clone(), event.origin.position())?;
            open.bytes += size;
            open.events.push(event);
            self.open_bytes += size;
            if open.events.len() >= self.max_records || open.bytes >= self.max_bytes {
                full.extend(self.take(&split));
            }
            if self.open_bytes > self.max_open_bytes
                && let Some(largest) = self.largest()
            {
                full.extend(self.take(&largest));
            }
        }
        Ok(full)
    }

    /// When the earliest open batch must be cut, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .map(|b| b.opened_at + self.max_wait)
            .min()
    }

    /// Cuts every open batch whose `max_wait` has passed, oldest first.
    pub fn cut_if_due(&mut self, now: Instant) -> Vec<Batch> {
        let due: Vec<SplitId> = self
            .open
            .iter()
            .filter(|(_, b)| b.opened_at + self.max_wait <= now)
            .map(|(split, _)| split.clone())
            .collect();
        let mut batches: Vec<Batch> = due.iter().filter_map(|split| self.take(split)).collect();
        batches.sort_by_key(|b| b.opened_at);
        batches
    }

    /// Cuts the open batch of `split`, if there is one.
    pub fn cut_split(&mut self, split: &SplitId) -> Option<Batch> {
        self.take(split)
    }

    /// Cuts whatever is open (shutdown, end of a finite source), oldest first.
    pub fn cut(&mut self) -> Vec<Batch> {
        let mut batches: Vec<Batch> = std::mem::take(&mut self.open).into_values().collect();
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

    fn spec(max_records: usize, max_bytes: u64, max_wait_ms: u64) -> BatchSpec {
        BatchSpec {
            max_records,
            max_bytes,
            max_wait: Duration::from_millis(max_wait_ms),
        }
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
        assert_eq!(batcher.deadline(), None);
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
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(500)));
        assert!(
            batcher
                .cut_if_due(start + Duration::from_millis(499))
                .is_empty()
        );
        let batches = batcher.cut_if_due(start + Duration::from_millis(500));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].events.len(), 2);
        assert_eq!(batcher.deadline(), None);
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
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(500)));
        let due = batcher.cut_if_due(start + Duration::from_millis(600));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].split(), SplitId::kafka("t", 1));
        assert_eq!(batcher.deadline(), Some(later + Duration::from_millis(500)));
        let due = batcher.cut_if_due(later + Duration::from_millis(500));
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
            let counted: usize = batcher.open.values().map(|b| b.bytes).sum();
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
}
