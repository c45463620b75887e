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
//! Headers cost an identity job more than payloads do: librdkafka parses each message's
//! header list, and an owned copy took two allocations per message (the list and each
//! name) and as many frees. Most topics carry the same headers on every message (a
//! source, a content type), so an event whose headers equal the previous event's of the
//! same partition shares that event's list ([`Event::headers`] is an `Arc<[Header]>`),
//! and header names are interned per chunk.
//!
//! The topic name is copied once per chunk too, rather than shared by every event of the
//! source: each event holds a reference to it, and the poll thread takes one per message
//! while the pipeline and the workers clone and drop others. With one name for the whole
//! source, every thread wrote the same reference count all the time; with one per chunk
//! the poll thread is done with it when it hands the chunk over.
//!
//! Invariant: [`ChunkBuilder::finish`] returns the events in the order they were pushed,
//! each with the bytes librdkafka gave for it (a null payload is an empty one, a null key
//! or header value stays `None`), and headers equal, name by name and byte for byte, to
//! the message's.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::Message;
#[cfg(doc)]
use rdkafka::message::BorrowedMessage;
use rdkafka::message::Headers;

use crate::event::{Event, Header, Origin};

/// Where one event's bytes are in the chunk's buffers.
struct Slices {
    buffer: usize,
    payload: Option<Range<usize>>,
    key: Option<Range<usize>>,
    /// The event's headers in `header_names` and `header_values`.
    headers: Range<usize>,
    /// Whether the headers equal the previous event's (same partition), whose list the
    /// event then shares; `headers` is empty then.
    same_headers: bool,
}

/// Header names kept per chunk; more distinct names than this are not interned.
const MAX_INTERNED_NAMES: usize = 64;

#[derive(Default)]
pub(super) struct ChunkBuilder {
    /// The events so far, their payload, key and headers still empty.
    events: Vec<Event>,
    slices: Vec<Slices>,
    /// Every header name and value of the chunk, in event and header order, except
    /// those of events that share the previous event's list.
    header_names: Vec<Arc<str>>,
    header_values: Vec<Option<Range<usize>>>,
    /// The distinct header names seen so far.
    interned: Vec<Arc<str>>,
    /// The buffer and the place in `header_names` of the list the last event uses.
    previous_headers: Option<(usize, Range<usize>)>,
    /// One buffer per partition, in order of first appearance.
    buffers: Vec<(i32, Vec<u8>)>,
    /// Bytes of the events so far, as [`Event::size_bytes`] counts them.
    bytes: usize,
    /// The chunk's own copy of the topic name, which its events share.
    topic: Option<Arc<str>>,
}

impl ChunkBuilder {
    /// Copies `message` (a [`BorrowedMessage`] from the consumer) into the chunk.
    pub(super) fn push(&mut self, message: &impl Message, topic: &Arc<str>) {
        let partition = message.partition();
        let buffer = self.buffer_of(partition);
        let data = &mut self.buffers[buffer].1;
        let before = data.len();
        let payload = message.payload().map(|payload| append(data, payload));
        let key = message.key().map(|key| append(data, key));
        let values_start = data.len();
        let first_header = self.header_names.len();
        let mut header_bytes = 0;
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let name = intern(&mut self.interned, header.key);
                header_bytes += name.len() + header.value.map_or(0, <[u8]>::len);
                self.header_names.push(name);
                self.header_values
                    .push(header.value.map(|value| append(data, value)));
            }
        }
        let headers = first_header..self.header_names.len();
        let same_headers = self.same_as_previous(buffer, headers.clone());
        let headers = if same_headers {
            // Shared with the previous event: forget this copy of them.
            self.header_names.truncate(first_header);
            self.header_values.truncate(first_header);
            self.buffers[buffer].1.truncate(values_start);
            first_header..first_header
        } else {
            self.previous_headers = Some((buffer, headers.clone()));
            headers
        };
        self.bytes += values_start - before + header_bytes;
        self.events.push(Event {
            payload: Bytes::new(),
            key: None,
            headers: Arc::default(),
            timestamp_ms: message.timestamp().to_millis(),
            origin: Origin::Kafka {
                topic: Arc::clone(self.topic.get_or_insert_with(|| Arc::from(&**topic))),
                partition,
                offset: message.offset(),
            },
            unreadable: None,
        });
        self.slices.push(Slices {
            buffer,
            payload,
            key,
            headers,
            same_headers,
        });
    }

    /// Whether the headers at `headers` (just appended to `buffer`) equal those of the
    /// previous event, when that event is of the same partition. The list the previous
    /// event uses is always of its own buffer (a list is only shared within one), so
    /// comparing buffers compares partitions.
    fn same_as_previous(&self, buffer: usize, headers: Range<usize>) -> bool {
        let Some((previous_buffer, theirs)) = &self.previous_headers else {
            return false;
        };
        if *previous_buffer != buffer {
            return false;
        }
        let data = &self.buffers[buffer].1;
        theirs.len() == headers.len()
            && theirs.clone().zip(headers).all(|(a, b)| {
                self.header_names[a] == self.header_names[b]
                    && match (&self.header_values[a], &self.header_values[b]) {
                        (None, None) => true,
                        (Some(a), Some(b)) => data[a.clone()] == data[b.clone()],
                        _ => false,
                    }
            })
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
        let mut events = self.events;
        let mut list: Arc<[Header]> = Arc::default();
        for (event, slices) in events.iter_mut().zip(self.slices) {
            let buffer = &buffers[slices.buffer];
            if let Some(payload) = slices.payload {
                event.payload = buffer.slice(payload);
            }
            event.key = slices.key.map(|key| buffer.slice(key));
            if !slices.same_headers {
                list = slices
                    .headers
                    .map(|at| Header {
                        name: Arc::clone(&self.header_names[at]),
                        value: self.header_values[at]
                            .clone()
                            .map(|value| buffer.slice(value)),
                    })
                    .collect();
            }
            event.headers = Arc::clone(&list);
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

/// Appends `part` to `data`; where it is.
fn append(data: &mut Vec<u8>, part: &[u8]) -> Range<usize> {
    let start = data.len();
    data.extend_from_slice(part);
    start..data.len()
}

/// The interned copy of `name`, adding it while there is room.
fn intern(interned: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(known) = interned.iter().find(|known| ***known == *name) {
        return Arc::clone(known);
    }
    let name: Arc<str> = Arc::from(name);
    if interned.len() < MAX_INTERNED_NAMES {
        interned.push(Arc::clone(&name));
    }
    name
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header as KafkaHeader, OwnedHeaders, OwnedMessage};

    use super::*;

    type Headers<'a> = &'a [(&'a str, Option<&'a str>)];

    fn message(partition: i32, offset: i64, headers: Headers<'_>) -> OwnedMessage {
        let headers = (!headers.is_empty()).then(|| {
            headers
                .iter()
                .fold(OwnedHeaders::new(), |list, (key, value)| {
                    list.insert(KafkaHeader {
                        key,
                        value: value.map(str::as_bytes),
                    })
                })
        });
        OwnedMessage::new(
            Some(format!("{{\"n\":{offset}}}").into_bytes()),
            Some(b"k".to_vec()),
            "clicks".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            partition,
            offset,
            headers,
        )
    }

    fn chunk(messages: &[(i32, Headers<'_>)]) -> Vec<Event> {
        let topic: Arc<str> = Arc::from("clicks");
        let mut builder = ChunkBuilder::default();
        for (offset, (partition, headers)) in messages.iter().enumerate() {
            builder.push(&message(*partition, offset as i64, headers), &topic);
        }
        let bytes = builder.bytes();
        let events = builder.finish();
        assert_eq!(bytes, events.iter().map(Event::size_bytes).sum::<usize>());
        events
    }

    fn pairs(event: &Event) -> Vec<(&str, Option<&[u8]>)> {
        event
            .headers
            .iter()
            .map(|header| (&*header.name, header.value.as_deref()))
            .collect()
    }

    #[test]
    fn every_event_gets_its_own_bytes_and_headers() {
        let a: Headers = &[("source", Some("e2e")), ("empty", None)];
        let b: Headers = &[("source", Some("e2f")), ("empty", None)];
        let c: Headers = &[("source", Some("e2e"))];
        let d: Headers = &[("empty", None), ("source", Some("e2e"))];
        let e: Headers = &[("source", None), ("empty", None)];
        let messages = [
            (0, a),
            (0, a),
            (0, b),
            (0, c),
            (0, d),
            (0, e),
            (0, &[]),
            (0, a),
        ];
        let events = chunk(&messages);
        for (offset, (event, (_, headers))) in events.iter().zip(messages).enumerate() {
            let expected: Vec<_> = headers
                .iter()
                .map(|(name, value)| (*name, value.map(str::as_bytes)))
                .collect();
            assert_eq!(pairs(event), expected, "headers of offset {offset}");
            assert_eq!(event.payload, format!("{{\"n\":{offset}}}").as_bytes());
            assert_eq!(event.key.as_deref(), Some(&b"k"[..]));
        }
    }

    #[test]
    fn consecutive_events_of_a_partition_with_equal_headers_share_one_list() {
        let a: Headers = &[("source", Some("e2e")), ("empty", None)];
        let b: Headers = &[("source", Some("other"))];
        let events = chunk(&[
            (0, a),
            (0, a),
            (0, a),
            (0, b),
            (0, a),
            (1, a),
            (1, a),
            (0, &[]),
            (0, &[]),
        ]);
        let shared = |x: usize, y: usize| Arc::ptr_eq(&events[x].headers, &events[y].headers);
        assert!(
            shared(0, 1) && shared(1, 2),
            "a run of equal headers shares one list"
        );
        assert!(
            !shared(2, 3) && !shared(3, 4),
            "different headers end the run"
        );
        assert!(!shared(4, 5), "another partition's event has its own list");
        assert!(shared(5, 6));
        assert!(shared(7, 8), "so do events without headers");
        assert!(
            Arc::ptr_eq(&events[0].headers[0].name, &events[3].headers[0].name),
            "names are interned"
        );
    }

    #[test]
    fn shared_headers_do_not_keep_a_second_copy_of_their_values() {
        let a: Headers = &[("trace", Some("0123456789"))];
        let one = chunk(&[(0, a)]);
        let many = chunk(&[(0, a), (0, a), (0, a)]);
        // The buffer holds each payload and key, and the header value once.
        let buffer_len = |events: &[Event]| {
            let payloads: usize = events.iter().map(|e| e.payload.len() + 1).sum();
            payloads + 10
        };
        // Where the last byte any event refers to lies in the chunk's one buffer.
        let end = |events: &[Event]| {
            let value = events[0].headers[0].value.as_ref().unwrap();
            let last = events.last().unwrap().key.as_ref().unwrap();
            (value.as_ptr() as usize + value.len()).max(last.as_ptr() as usize + last.len())
                - events[0].payload.as_ptr() as usize
        };
        assert_eq!(end(&one), buffer_len(&one));
        assert_eq!(end(&many), buffer_len(&many));
    }

    #[test]
    fn events_of_a_chunk_share_the_chunk_s_own_topic_name() {
        let topic: Arc<str> = Arc::from("clicks");
        let mut builder = ChunkBuilder::default();
        for offset in 0..3 {
            builder.push(&message(offset % 2, i64::from(offset), &[]), &topic);
        }
        let events = builder.finish();
        let topic_of = |event: &Event| match &event.origin {
            Origin::Kafka { topic, .. } => Arc::clone(topic),
            other => panic!("not a Kafka origin: {other:?}"),
        };
        let first = topic_of(&events[0]);
        assert_eq!(&*first, "clicks");
        assert!(
            !Arc::ptr_eq(&first, &topic),
            "the source's own name is not shared"
        );
        assert!(
            events
                .iter()
                .all(|event| Arc::ptr_eq(&topic_of(event), &first))
        );
    }
}
