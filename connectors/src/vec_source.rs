//! An in-memory source over a fixed list of events, for `sluice invoke` and unit tests.

use async_trait::async_trait;

use crate::checkpoint::CheckpointDelta;
use crate::event::Event;
use crate::source::{Source, SourceError};

/// Yields its events in chunks, then reports itself finished. Records every ack.
#[derive(Debug, Default)]
pub struct VecSource {
    events: std::collections::VecDeque<Event>,
    chunk: usize,
    /// Every delta acknowledged so far, in order.
    pub acked: Vec<CheckpointDelta>,
}

impl VecSource {
    pub fn new(events: Vec<Event>, chunk: usize) -> Self {
        Self {
            events: events.into(),
            chunk: chunk.max(1),
            acked: Vec::new(),
        }
    }
}

#[async_trait]
impl Source for VecSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        if self.events.is_empty() {
            return Ok(None);
        }
        let take = self.chunk.min(self.events.len());
        Ok(Some(self.events.drain(..take).collect()))
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        self.acked.push(delta.clone());
        Ok(())
    }

    fn backlog(&self) -> Option<u64> {
        Some(self.events.len() as u64)
    }
}
