//! Cuts the stream of events into batches, like Lambda's batch size and batching window.
//!
//! A batch closes when it holds `max_records` events, when the next event would take it
//! past `max_bytes`, or when `max_wait` has passed since its first event. A single event
//! larger than `max_bytes` forms a batch of its own rather than being refused: the limit
//! bounds batches, it never drops data.
//!
//! Every batch carries the [`CheckpointDelta`] of the positions it covers, so positions
//! travel with the data they belong to.

use std::time::{Duration, Instant};

use sluice_connectors::{CheckpointDelta, CheckpointError, Event};

use crate::spec::BatchSpec;

/// Events to run through the function together, and the positions they cover.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Sum of [`Event::size_bytes`].
    pub bytes: usize,
    pub checkpoint: CheckpointDelta,
    /// When the first event arrived.
    pub opened_at: Instant,
}

impl Batch {
    fn open(now: Instant) -> Self {
        Self {
            events: Vec::new(),
            bytes: 0,
            checkpoint: CheckpointDelta::new(),
            opened_at: now,
        }
    }
}

/// Accumulates events into at most one open batch.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_bytes: usize,
    max_wait: Duration,
    open: Option<Batch>,
}

impl Batcher {
    pub fn new(spec: &BatchSpec) -> Self {
        Self {
            max_records: spec.max_records.max(1),
            max_bytes: usize::try_from(spec.max_bytes).unwrap_or(usize::MAX).max(1),
            max_wait: spec.max_wait,
            open: None,
        }
    }

    /// Adds events in arrival order and returns the batches they filled. Fails only if a
    /// source delivered positions out of order, which would make acknowledging unsafe.
    pub fn push(
        &mut self,
        events: Vec<Event>,
        now: Instant,
    ) -> Result<Vec<Batch>, CheckpointError> {
        let mut full = Vec::new();
        for event in events {
            let size = event.size_bytes();
            if let Some(open) = &self.open
                && !open.events.is_empty()
                && open.bytes + size > self.max_bytes
                && let Some(batch) = self.open.take()
            {
                full.push(batch);
            }
            let open = self.open.get_or_insert_with(|| Batch::open(now));
            open.checkpoint
                .record(event.origin.split(), event.origin.position())?;
            open.bytes += size;
            open.events.push(event);
            if open.events.len() >= self.max_records || open.bytes >= self.max_bytes {
                full.extend(self.open.take());
            }
        }
        Ok(full)
    }

    /// When the open batch must be cut, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|b| b.opened_at + self.max_wait)
    }

    /// Cuts the open batch if its `max_wait` has passed.
    pub fn cut_if_due(&mut self, now: Instant) -> Option<Batch> {
        match self.deadline() {
            Some(deadline) if deadline <= now => self.open.take(),
            _ => None,
        }
    }

    /// Cuts whatever is open (shutdown, end of a finite source).
    pub fn cut(&mut self) -> Option<Batch> {
        self.open.take()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_none()
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
        let rest = batcher.cut().unwrap();
        assert_eq!(rest.events.len(), 1);
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
        assert_eq!(batcher.cut().unwrap().events.len(), 1);
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
        assert_eq!(batcher.cut().unwrap().events[0].origin.position(), 2);
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
                .push(vec![event(1, 0, "{}")], later)
                .unwrap()
                .is_empty()
        );
        assert_eq!(batcher.deadline(), Some(start + Duration::from_millis(500)));
        assert!(
            batcher
                .cut_if_due(start + Duration::from_millis(499))
                .is_none()
        );
        let batch = batcher
            .cut_if_due(start + Duration::from_millis(500))
            .unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(
            batch.checkpoint.iter().count(),
            2,
            "two partitions in one batch"
        );
        assert_eq!(batcher.deadline(), None);
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
