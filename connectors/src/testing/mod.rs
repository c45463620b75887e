//! The test kit for sources, shared by this crate's tests, the platform's and the
//! end-to-end tests (feature `testing`): bounded waits, taking a number of events from a
//! source, a source that records what the platform did with it, and the conformance suite
//! every source runs ([`conformance`]).
//!
//! Every wait here is bounded and checks a condition; none sleeps for a fixed time to let
//! something happen.

#![allow(clippy::unwrap_used)]

pub mod conformance;
pub mod rabbitmq;
mod recording;
pub mod splits;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use recording::{Recording, RecordingSource};

use crate::checkpoint::CheckpointDelta;
use crate::event::Event;
use crate::source::Source;

/// Bound on every wait of the kit that is not given one.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long [`assert_nothing_more`] listens.
pub const QUIET: Duration = Duration::from_secs(1);

/// A name no other test (or run) uses: `prefix`, the time in nanoseconds and the pid.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{nanos:x}-{}", std::process::id())
}

/// Takes events until `count` have arrived; panics if they do not within [`DEADLINE`],
/// if the source ends or fails first, or if it hands over more than `count`.
pub async fn collect<S: Source + ?Sized>(source: &mut S, count: usize) -> Vec<Event> {
    let started = Instant::now();
    let mut events = Vec::new();
    while events.len() < count {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, source.next_events()).await {
            Ok(Ok(Some(chunk))) => {
                assert!(!chunk.is_empty(), "a chunk is never empty");
                events.extend(chunk);
            }
            Ok(Ok(None)) => panic!("the source ended after {} of {count} events", events.len()),
            Ok(Err(error)) => panic!("source failed: {error}"),
            Err(_) => panic!("got {} of {count} events within {DEADLINE:?}", events.len()),
        }
    }
    assert_eq!(events.len(), count, "more events than expected");
    events
}

/// Takes every event a finite source hands over until it reports itself finished; panics
/// if it fails or does not finish within [`DEADLINE`].
pub async fn drain<S: Source + ?Sized>(source: &mut S) -> Vec<Event> {
    let started = Instant::now();
    let mut events = Vec::new();
    loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, source.next_events()).await {
            Ok(Ok(Some(chunk))) => events.extend(chunk),
            Ok(Ok(None)) => return events,
            Ok(Err(error)) => panic!("source failed: {error}"),
            Err(_) => panic!(
                "the source did not finish within {DEADLINE:?} ({} events)",
                events.len()
            ),
        }
    }
}

/// Asserts that no event arrives within [`QUIET`]: the source either waits (a broker) or
/// reports itself finished (a finite source).
pub async fn assert_nothing_more<S: Source + ?Sized>(source: &mut S) {
    match tokio::time::timeout(QUIET, source.next_events()).await {
        Err(_) | Ok(Ok(None)) => {}
        Ok(other) => panic!("expected no more events, got {other:?}"),
    }
}

/// Waits until `condition` holds, checking every 20 ms; panics naming `what` after
/// [`DEADLINE`].
pub async fn wait_until(what: &str, condition: impl AsyncFnMut() -> bool) {
    wait_until_within(what, DEADLINE, condition).await;
}

/// [`wait_until`] with a bound of the caller's: for conditions that take a whole job run.
pub async fn wait_until_within(
    what: &str,
    timeout: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let started = Instant::now();
    let interval = (timeout / 300).clamp(Duration::from_millis(20), Duration::from_millis(100));
    while !condition().await {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}

/// The delta acknowledging exactly `events` (in delivery order): each event's position in
/// its split.
pub fn delta_of(events: &[Event]) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    for event in events {
        delta
            .record(&event.origin.split(), event.origin.position())
            .unwrap_or_else(|error| panic!("events out of order: {error}"));
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use crate::vec_source::VecSource;

    fn lines(count: u64) -> Vec<Event> {
        (1..=count)
            .map(|line| Event::from_payload(format!("{line}"), Origin::Sample { line }))
            .collect()
    }

    #[tokio::test]
    async fn collect_takes_exactly_the_events_asked_for() {
        let mut source = VecSource::new(lines(7), 3);
        let events = collect(&mut source, 6).await;
        assert_eq!(events.len(), 6);
        assert_eq!(collect(&mut source, 1).await[0].payload, "7");
        assert_nothing_more(&mut source).await;
    }

    #[tokio::test]
    async fn drain_takes_everything_until_the_end() {
        assert_eq!(drain(&mut VecSource::new(lines(5), 2)).await.len(), 5);
    }

    #[tokio::test]
    #[should_panic(expected = "ended after 3 of 4")]
    async fn collect_fails_when_the_source_ends_first() {
        collect(&mut VecSource::new(lines(3), 2), 4).await;
    }

    #[tokio::test]
    #[should_panic(expected = "more events than expected")]
    async fn collect_fails_on_more_events_than_asked_for() {
        collect(&mut VecSource::new(lines(4), 4), 3).await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected no more events")]
    async fn nothing_more_fails_on_another_event() {
        assert_nothing_more(&mut VecSource::new(lines(1), 1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_at_its_bound() {
        let waited = tokio::spawn(wait_until_within(
            "never",
            Duration::from_secs(5),
            async || false,
        ));
        let error = waited.await.unwrap_err();
        assert!(error.is_panic());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_its_condition_holds() {
        let mut calls = 0;
        wait_until("the third check", async || {
            calls += 1;
            calls == 3
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_delta_covers_each_split_from_first_to_last_event() {
        let delta = delta_of(&lines(4));
        let range = delta.get(&crate::checkpoint::SplitId::Sample).unwrap();
        assert_eq!((range.first, range.last), (1, 4));
    }
}
