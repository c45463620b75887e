//! A source that records what the platform did with it, for tests that hand the source
//! over to a job and look afterwards.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::checkpoint::CheckpointDelta;
use crate::event::Event;
use crate::source::{Source, SourceError};

/// What happened to a [`RecordingSource`], readable while the job holds the source and
/// after it dropped it.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    acked: Arc<Mutex<Vec<CheckpointDelta>>>,
    delivered: Arc<AtomicUsize>,
    exhausted: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Recording {
    /// Every delta acknowledged so far, in order.
    pub fn acked(&self) -> Vec<CheckpointDelta> {
        self.acked.lock().unwrap().clone()
    }

    /// Per split (by its text), the last position acknowledged, in split order.
    pub fn acked_through(&self) -> Vec<(String, i64)> {
        let mut last = std::collections::BTreeMap::new();
        for delta in self.acked.lock().unwrap().iter() {
            for (split, range) in delta.iter() {
                last.insert(split.to_string(), range.last);
            }
        }
        last.into_iter().collect()
    }

    /// How many events the source has handed over.
    pub fn delivered(&self) -> usize {
        self.delivered.load(Ordering::SeqCst)
    }

    /// True once the inner source had nothing more to hand over.
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::SeqCst)
    }

    /// True once the platform closed the source.
    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Wraps a source and records every ack, how many events it handed over, and whether it
/// ran dry or was closed. [`RecordingSource::endless`] turns a finite source into one that
/// waits for more forever once its events are taken, as a broker does.
#[derive(Debug)]
pub struct RecordingSource<S> {
    inner: S,
    recording: Recording,
    endless: bool,
}

impl<S: Source> RecordingSource<S> {
    /// The source and the handle to what it records.
    pub fn new(inner: S) -> (Self, Recording) {
        let recording = Recording::default();
        let source = Self {
            inner,
            recording: recording.clone(),
            endless: false,
        };
        (source, recording)
    }

    /// Once the inner source ends, waits forever instead of ending (and marks the
    /// recording exhausted).
    pub fn endless(mut self) -> Self {
        self.endless = true;
        self
    }
}

#[async_trait]
impl<S: Source> Source for RecordingSource<S> {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        match self.inner.next_events().await? {
            Some(events) => {
                self.recording
                    .delivered
                    .fetch_add(events.len(), Ordering::SeqCst);
                Ok(Some(events))
            }
            None => {
                self.recording.exhausted.store(true, Ordering::SeqCst);
                if self.endless {
                    std::future::pending().await
                } else {
                    Ok(None)
                }
            }
        }
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        self.inner.ack(delta).await?;
        self.recording.acked.lock().unwrap().push(delta.clone());
        Ok(())
    }

    fn backlog(&self) -> Option<u64> {
        self.inner.backlog()
    }

    fn ack_pressure(&self, pending: &CheckpointDelta) -> bool {
        self.inner.ack_pressure(pending)
    }

    async fn close(&mut self) {
        self.inner.close().await;
        self.recording.closed.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;
    use crate::testing::{collect, delta_of};
    use crate::vec_source::VecSource;

    fn lines(count: u64) -> Vec<Event> {
        (1..=count)
            .map(|line| Event::from_payload("{}", Origin::Sample { line }))
            .collect()
    }

    #[tokio::test]
    async fn records_deliveries_acks_and_the_end() {
        let (mut source, recording) = RecordingSource::new(VecSource::new(lines(5), 2));
        let events = collect(&mut source, 5).await;
        source.ack(&delta_of(&events[..3])).await.unwrap();
        assert_eq!(recording.delivered(), 5);
        assert_eq!(recording.acked_through(), vec![("sample".to_owned(), 3)]);
        assert!(!recording.exhausted());
        assert!(source.next_events().await.unwrap().is_none());
        assert!(recording.exhausted());
        source.close().await;
        assert!(recording.closed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_source_waits_once_its_events_are_taken() {
        let (source, recording) = RecordingSource::new(VecSource::new(lines(1), 1));
        let mut source = source.endless();
        collect(&mut source, 1).await;
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(60), source.next_events()).await;
        assert!(waited.is_err(), "an endless source never ends");
        assert!(recording.exhausted());
    }
}
