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
//! Every batch carries the [`CheckpointDelta`] of the positions it covers (one split),
//! so positions travel with the data they belong to.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_connectors::{CheckpointDelta, CheckpointError, Event, SplitId};

use crate::spec::BatchSpec;

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
    open: BTreeMap<SplitId, Batch>,
}

impl Batcher {
    pub fn new(spec: &BatchSpec) -> Self {
        Self {
            max_records: spec.max_records.max(1),
            max_bytes: usize::try_from(spec.max_bytes).unwrap_or(usize::MAX).max(1),
            max_wait: spec.max_wait,
            open: BTreeMap::new(),
        }
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
                && let Some(batch) = self.open.remove(&split)
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
            if open.events.len() >= self.max_records || open.bytes >= self.max_bytes {
                full.extend(self.open.remove(&split));
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
        let mut batches: Vec<Batch> = due
            .iter()
            .filter_map(|split| self.open.remove(split))
            .collect();
        batches.sort_by_key(|b| b.opened_at);
        batches
    }

    /// Cuts the open batch of `split`, if there is one.
    pub fn cut_split(&mut self, split: &SplitId) -> Option<Batch> {
        self.open.remove(split)
    }

    /// Cuts whatever is open (shutdown, end of a finite source), oldest first.
    pub fn cut(&mut self) -> Vec<Batch> {
        let mut batches: Vec<Batch> = std::mem::take(&mut self.open).into_values().collect();
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
    fn replayed_positions_are_refused() {
        let mut batcher = Batcher::new(&spec(100, 1 << 20, 500));
        let now = Instant::now();
        batcher.push(vec![event(0, 5, "{}")], now).unwrap();
        let err = batcher.push(vec![event(0, 4, "{}")], now).unwrap_err();
        assert!(err.to_string().contains("t/0"), "{err}");
    }
}
