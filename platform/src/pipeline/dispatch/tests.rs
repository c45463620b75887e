use std::time::Instant;

use bytes::Bytes;
use sluice_connectors::testing::splits;
use sluice_connectors::{CheckpointDelta, Event};

use super::*;

/// A batch of partition `partition` holding `offsets`, keyed by `keys` (one per offset).
fn batch(partition: i32, offsets: std::ops::Range<i64>, keys: &[&str]) -> Batch {
    let mut checkpoint = CheckpointDelta::new();
    let events: Vec<Event> = offsets
        .clone()
        .enumerate()
        .map(|(i, offset)| {
            let mut event = Event::from_payload("{}", splits::origin(partition, offset));
            event.key = keys.get(i).map(|k| Bytes::from(k.to_string()));
            checkpoint
                .record(&event.origin.split(), event.origin.position())
                .unwrap();
            event
        })
        .collect();
    Batch {
        split: splits::split(partition),
        bytes: events.len() * 2,
        events,
        checkpoint,
        opened_at: Instant::now(),
    }
}

fn first_offset(batch: &Batch) -> i64 {
    batch.events[0].origin.position()
}

#[test]
fn partition_ordering_runs_one_batch_per_partition_and_partitions_side_by_side() {
    let mut dispatch: Dispatcher<i64> = Dispatcher::new(Ordering::Partition);
    dispatch.enqueue(batch(0, 0..10, &[]));
    dispatch.enqueue(batch(0, 10..20, &[]));
    dispatch.enqueue(batch(1, 0..10, &[]));
    assert_eq!(dispatch.lanes(), 2);
    let (a, _) = dispatch.start_next().unwrap();
    let (b, _) = dispatch.start_next().unwrap();
    assert_ne!(a.split, b.split, "splits take turns");
    assert!(
        !dispatch.has_startable(),
        "partition 0's second batch waits for its first"
    );
    assert_eq!(dispatch.running_batches(), 2);
    let p0 = if a.split == splits::split(0) { a } else { b };
    assert_eq!(dispatch.finish(&p0, 0), vec![0]);
    let (next, batch) = dispatch.start_next().unwrap();
    assert_eq!(next.split, splits::split(0));
    assert_eq!(first_offset(&batch), 10);
}

#[test]
fn results_are_applied_in_split_order_whatever_order_they_finish_in() {
    let mut dispatch: Dispatcher<i64> = Dispatcher::new(Ordering::None);
    for start in [0, 10, 20] {
        dispatch.enqueue(batch(0, start..start + 10, &[]));
    }
    let tickets: Vec<Ticket> = (0..3).map(|_| dispatch.start_next().unwrap().0).collect();
    assert!(dispatch.start_next().is_none());
    // The third finishes first, then the second: both wait for the first.
    assert!(dispatch.finish(&tickets[2], 20).is_empty());
    assert!(dispatch.finish(&tickets[1], 10).is_empty());
    assert_eq!(dispatch.finish(&tickets[0], 0), vec![0, 10, 20]);
    assert!(dispatch.is_idle());
}

#[test]
fn key_ordering_keeps_batches_sharing_a_key_apart_and_in_order() {
    let mut dispatch: Dispatcher<i64> = Dispatcher::new(Ordering::Key);
    dispatch.enqueue(batch(0, 0..2, &["a", "b"]));
    dispatch.enqueue(batch(0, 2..4, &["c", "d"]));
    dispatch.enqueue(batch(0, 4..6, &["a", "e"]));
    dispatch.enqueue(batch(0, 6..8, &["f", "g"]));
    let (first, _) = dispatch.start_next().unwrap();
    let (second, b) = dispatch.start_next().unwrap();
    assert_eq!(first_offset(&b), 2, "no key shared with the running batch");
    // The third shares "a" with the first: it waits, and the fourth waits behind it
    // (starting it first could reorder a key the third and fourth share).
    assert!(!dispatch.has_startable());
    assert!(
        dispatch.finish(&second, 2).is_empty(),
        "waits for the first"
    );
    assert_eq!(dispatch.finish(&first, 0), vec![0, 2]);
    let (_, c) = dispatch.start_next().unwrap();
    assert_eq!(first_offset(&c), 4);
    let (_, d) = dispatch.start_next().unwrap();
    assert_eq!(first_offset(&d), 6);
}

#[test]
fn keyless_records_never_conflict_under_key_ordering() {
    let mut dispatch: Dispatcher<i64> = Dispatcher::new(Ordering::Key);
    dispatch.enqueue(batch(0, 0..2, &[]));
    dispatch.enqueue(batch(0, 2..4, &[]));
    assert!(dispatch.start_next().is_some());
    assert!(dispatch.start_next().is_some());
}

#[test]
fn after_a_failure_nothing_later_of_the_split_is_applied_or_started() {
    let mut dispatch: Dispatcher<i64> = Dispatcher::new(Ordering::None);
    for start in [0, 10, 20] {
        dispatch.enqueue(batch(0, start..start + 10, &[]));
    }
    dispatch.enqueue(batch(1, 0..10, &[]));
    let first = dispatch.start_next().unwrap().0;
    let other = dispatch.start_next().unwrap().0;
    let second = dispatch.start_next().unwrap().0;
    assert_eq!(first.split, splits::split(0));
    assert_eq!(other.split, splits::split(1));
    assert_eq!(second.split, splits::split(0));
    assert_eq!(dispatch.finish(&first, 0), vec![0]);
    dispatch.fail(&second);
    assert_eq!(
        dispatch.queued_batches(),
        0,
        "the split's waiting batch is dropped"
    );
    assert!(!dispatch.has_startable());
    // Another split is unaffected.
    assert_eq!(dispatch.finish(&other, 100), vec![100]);
    assert!(dispatch.is_idle());
    assert_eq!(dispatch.records(), 0);
}
