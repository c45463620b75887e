//! The events of one poll chunk, copied out of librdkafka's buffers into one buffer per
//! partition instead of one allocation per payload, key and header value.
//!
//! Each event's payload, key and header values are slices ([`Bytes::slice`]) of its
//! partition's buffer, which is freed when the last event sliced from it is dropped.
//! Events of one partition go to the same batch (or to the next one when a batch is cut
//! in the middle of the chunk), so a buffer lives about as long as its events would
//! have: memory stays bounded by what the pipeline holds. What this saves is the
//! allocator's work: a `malloc` per payload, key and header value on the poll thread,
//! and the matching `free` on whichever worker drops the batch (the largest share of
//! `free` in a profile of an identity job).
//!
//! Invariant: [`ChunkBuilder::finish`] returns the events in the order they were pushed,
//! each with the bytes librdkafka gave for it (a null payload is an empty one, a null key
//! or header value stays `None`).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::event::{Event, Header, Origin};

/// Where one event's bytes are in the chunk's buffers.
struct Slices {
    buffer: usize,
    payload: Option<Range<usize>>,
    key: Option<Range<usize>>,
}

#[derive(Default)]
pub(super) struct ChunkBuilder {
    /// The events so far, their payload, key and header values still empty.
    events: Vec<Event>,
    slices: Vec<Slices>,
    /// Every header value of the chunk, in event and header order.
    header_values: Vec<Option<Range<usize>>>,
    /// One buffer per partition, in order of first appearance.
    buffers: Vec<(i32, Vec<u8>)>,
    /// Bytes of the events so far, as [`Event::size_bytes`] counts them.
    bytes: usize,
}

impl ChunkBuilder {
    /// Copies `message` into the chunk.
    pub(super) fn push(&mut self, message: &BorrowedMessage<'_>, topic: &Arc<str>) {
        let partition = message.partition();
        let buffer = self.buffer_of(partition);
        let data = &mut self.buffers[buffer].1;
        let before = data.len();
        let mut append = |part: &[u8]| {
            let start = data.len();
            data.extend_from_slice(part);
            start..data.len()
        };
        let payload = message.payload().map(&mut append);
        let key = message.key().map(&mut append);
        let header_values = &mut self.header_values;
        let mut header_names = 0;
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        header_values.push(header.value.map(&mut append));
                        header_names += header.key.len();
                        Header {
                            name: header.key.to_owned(),
                            value: None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.bytes += self.buffers[buffer].1.len() - before + header_names;
        self.events.push(Event {
            payload: Bytes::new(),
            key: None,
            headers,
            timestamp_ms: message.timestamp().to_millis(),
            origin: Origin::Kafka {
                topic: Arc::clone(topic),
                partition,
                offset: message.offset(),
            },
            unreadable: None,
        });
        self.slices.push(Slices {
            buffer,
            payload,
            key,
        });
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes of the events pushed so far, as [`Event::size_bytes`] counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The events, each holding its slices of the chunk's buffers.
    pub(super) fn finish(self) -> Vec<Event> {
        let buffers: Vec<Bytes> = self
            .buffers
            .into_iter()
            .map(|(_, data)| Bytes::from(data))
            .collect();
        let mut header_values = self.header_values.into_iter();
        let mut events = self.events;
        for (event, slices) in events.iter_mut().zip(self.slices) {
            let buffer = &buffers[slices.buffer];
            if let Some(payload) = slices.payload {
                event.payload = buffer.slice(payload);
            }
            event.key = slices.key.map(|key| buffer.slice(key));
            for header in &mut event.headers {
                header.value = header_values
                    .next()
                    .flatten()
                    .map(|value| buffer.slice(value));
            }
        }
        events
    }

    fn buffer_of(&mut self, partition: i32) -> usize {
        // Messages come in runs per partition: the last buffer is the likely one.
        match self.buffers.iter().rposition(|(p, _)| *p == partition) {
            Some(at) => at,
            None => {
                self.buffers.push((partition, Vec::new()));
                self.buffers.len() - 1
            }
        }
    }
}
