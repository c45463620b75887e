//! The source conformance suite: what every source promises the platform (the contract in
//! [`crate::source`]), checked by one function, [`check_source`], that each source's tests
//! call with a [`Harness`] of their own.
//!
//! The properties, in the order the suite checks them:
//!
//! 1. **Positions move forward**: within one start, each split's positions grow, and every
//!    message fed is handed over exactly once.
//! 2. **Ack only what the platform acknowledged**: the source never acknowledges by itself;
//!    acks come in several steps, as after several batches, and cover half the messages.
//! 3. **Redelivery after restart**: after a stop and a new start, exactly the messages not
//!    acknowledged come again, and none that were.
//! 4. **Shutdown drains**: acks given before `close` are durable once `close` returns (a
//!    bounded wait): after the next start only messages fed since come.
//!
//! Messages are numbered by the suite (`feed(0..12)`); a harness makes them available in
//! whatever form its source reads (a record, a queued message, an object) and says which
//! number an event carries. The suite feeds only while no source of the harness is open.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use async_trait::async_trait;

use crate::checkpoint::SplitId;
use crate::event::Event;
use crate::source::Source;
use crate::testing::{DEADLINE, assert_nothing_more, collect, delta_of};

/// Messages fed before the first start.
const FIRST: usize = 12;
/// Messages fed after the drained shutdown.
const LATER: usize = 6;

/// One source under test, with the broker, store or list it reads.
/// Its futures need not be `Send`: the suite runs on the test's own task.
#[async_trait(?Send)]
pub trait Harness {
    type Source: Source;

    /// Makes the messages numbered `numbers` available to the next start.
    async fn feed(&mut self, numbers: Range<usize>);

    /// Starts a source as a job start does: the first start, or a restart after
    /// [`Harness::stop`].
    async fn open(&mut self) -> Self::Source;

    /// Stops a source as a job stop does. The default closes it and drops it.
    async fn stop(&mut self, mut source: Self::Source) {
        source.close().await;
    }

    /// The number `event` was fed as.
    fn number(&self, event: &Event) -> usize;
}

/// Runs every property of the suite against the harness's source; panics naming the
/// property that does not hold.
pub async fn check_source<H: Harness>(harness: &mut H) {
    harness.feed(0..FIRST).await;
    let mut source = harness.open().await;
    let first = collect(&mut source, FIRST).await;
    assert_eq!(
        numbers(harness, &first),
        (0..FIRST).collect(),
        "positions move forward: every message fed is handed over once"
    );
    assert_positions_grow(&first, "first start");

    let acked = FIRST / 2;
    for step in [&first[..acked / 2], &first[acked / 2..acked]] {
        source
            .ack(&delta_of(step))
            .await
            .unwrap_or_else(|error| panic!("ack of delivered positions failed: {error}"));
    }
    harness.stop(source).await;

    let mut source = harness.open().await;
    let again = collect(&mut source, FIRST - acked).await;
    assert_eq!(
        numbers(harness, &again),
        numbers(harness, &first[acked..]),
        "redelivery after restart: exactly what was not acknowledged comes again"
    );
    assert_nothing_more(&mut source).await;
    assert_positions_grow(&again, "restart");

    source
        .ack(&delta_of(&again))
        .await
        .unwrap_or_else(|error| panic!("ack of redelivered positions failed: {error}"));
    tokio::time::timeout(DEADLINE, harness.stop(source))
        .await
        .unwrap_or_else(|_| panic!("shutdown drains: stop did not return within {DEADLINE:?}"));

    harness.feed(FIRST..FIRST + LATER).await;
    let mut source = harness.open().await;
    let later = collect(&mut source, LATER).await;
    assert_nothing_more(&mut source).await;
    assert_eq!(
        numbers(harness, &later),
        (FIRST..FIRST + LATER).collect(),
        "shutdown drains: acks given before the stop hold, only new messages come"
    );
    assert_positions_grow(&later, "start after a drained shutdown");
    source
        .ack(&delta_of(&later))
        .await
        .unwrap_or_else(|error| panic!("ack of new positions failed: {error}"));
    harness.stop(source).await;
}

fn numbers<H: Harness>(harness: &H, events: &[Event]) -> BTreeSet<usize> {
    let numbers: Vec<usize> = events.iter().map(|event| harness.number(event)).collect();
    let unique: BTreeSet<usize> = numbers.iter().copied().collect();
    assert_eq!(
        unique.len(),
        numbers.len(),
        "a message was handed over twice in one start: {numbers:?}"
    );
    unique
}

fn assert_positions_grow(events: &[Event], when: &str) {
    let mut last: BTreeMap<SplitId, i64> = BTreeMap::new();
    for event in events {
        let (split, position) = (event.origin.split(), event.origin.position());
        if let Some(previous) = last.insert(split.clone(), position) {
            assert!(
                position > previous,
                "positions move forward ({when}): {split} went from {previous} to {position}"
            );
        }
    }
}

/// The in-memory source runs the suite here, beside two broken variants of it that the
/// suite must catch.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use crate::vec_source::VecSource;

    /// What a broken source gets wrong at a restart.
    #[derive(Default, Clone, Copy)]
    enum Fault {
        #[default]
        None,
        /// Hands over acknowledged messages again.
        ForgetsAcks,
        /// Treats every message handed over as acknowledged.
        AcksByItself,
    }

    /// The in-memory source has nothing durable of its own: the harness keeps the list
    /// and, at each stop, what the stopped source recorded as acknowledged; a restart
    /// hands over the rest.
    #[derive(Default)]
    struct InMemory {
        fed: Vec<Event>,
        acked_through: i64,
        fault: Fault,
    }

    #[async_trait(?Send)]
    impl Harness for InMemory {
        type Source = VecSource;

        async fn feed(&mut self, numbers: Range<usize>) {
            self.fed.extend(numbers.map(|n| {
                Event::from_payload(n.to_string(), Origin::Sample { line: n as u64 + 1 })
            }));
        }

        async fn open(&mut self) -> VecSource {
            let left = self
                .fed
                .iter()
                .filter(|event| event.origin.position() > self.acked_through)
                .cloned()
                .collect();
            VecSource::new(left, 3)
        }

        async fn stop(&mut self, mut source: VecSource) {
            source.close().await;
            match self.fault {
                Fault::None => {
                    for delta in &source.acked {
                        for (_, range) in delta.iter() {
                            self.acked_through = self.acked_through.max(range.last);
                        }
                    }
                }
                Fault::ForgetsAcks => {}
                Fault::AcksByItself => {
                    self.acked_through = self.fed.len() as i64;
                }
            }
        }

        fn number(&self, event: &Event) -> usize {
            std::str::from_utf8(&event.payload)
                .unwrap()
                .parse()
                .unwrap()
        }
    }

    #[tokio::test]
    async fn the_in_memory_source_conforms() {
        check_source(&mut InMemory::default()).await;
    }

    #[tokio::test]
    #[should_panic(expected = "redelivery after restart")]
    async fn a_source_that_forgets_its_acks_fails() {
        check_source(&mut InMemory {
            fault: Fault::ForgetsAcks,
            ..InMemory::default()
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "the source ended after 0 of 6 events")]
    async fn a_source_that_acks_by_itself_fails() {
        check_source(&mut InMemory {
            fault: Fault::AcksByItself,
            ..InMemory::default()
        })
        .await;
    }
}
