//! The bucket source in listing mode: polls a prefix for objects not yet done, streams
//! each through [`super::reader`] on a blocking thread, and marks an object done in the
//! [`Cursor`] once every record of it is acknowledged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;

use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::cursor::Cursor;
use super::feed::NotificationFeed;
use super::notification::{NoticeFilter, ObjectNotice};
use super::reader::{InputCompression, InputFormat, ReadError, Record, read_records, resolve};
use super::spool::NoticeSpool;
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::{Event, Origin};
use crate::source::{Source, SourceError};

const CONNECTOR: &str = "bucket";
/// Events per chunk handed to the platform.
const CHUNK: usize = 1000;

/// Everything the bucket source needs; the platform opens the stores.
#[derive(Debug, Clone)]
pub struct BucketSourceConfig {
    pub job: String,
    /// Where input objects are listed.
    pub input_store: Arc<dyn ObjectStore>,
    pub input_prefix: Path,
    /// The input URL, for origins and messages.
    pub input_url: String,
    /// Where the cursor lives (beside the output).
    pub cursor_store: Arc<dyn ObjectStore>,
    pub cursor_path: Path,
    pub format: InputFormat,
    pub compression: InputCompression,
    /// How objects are found.
    pub discovery: Discovery,
    /// End (`next_events` returns `None`) once a listing finds nothing new: for one-shot
    /// runs such as the quickstart. Notifications never end.
    pub stop_when_idle: bool,
    /// Notifications: how long a notified object may stay missing (looked for again
    /// meanwhile) before its notice is given up as a dead letter and leaves the spool.
    pub missing_timeout: Duration,
}

/// How the source learns about objects.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// List the prefix every `poll_interval`.
    Listing { poll_interval: Duration },
    /// Receive S3 event notifications on an HTTP endpoint, an AMQP queue or a Kafka
    /// topic; accepted ones are kept in the spool (see [`super::spool`]) until their
    /// object is done.
    Notifications {
        feed: Box<NotificationFeed>,
        filter: NoticeFilter,
        spool: NoticeSpool,
    },
}

pub(super) enum ReadItem {
    Events(Vec<Event>),
    /// The object was read to its end; the line of its last record, if any.
    Done {
        last: Option<u64>,
    },
    Failed(ReadError),
}

struct Reading {
    split: SplitId,
    key: String,
    etag: String,
    notice: Option<ObjectNotice>,
    items: mpsc::Receiver<ReadItem>,
    /// The furthest position acknowledged while the object was still being read: the
    /// platform may commit an object's records before the reader reports its end.
    acked: Option<i64>,
}

/// An object whose records were handed over, waiting for their acknowledgement.
#[derive(Clone)]
struct InFlight {
    key: String,
    etag: String,
    /// Known once the object was read to its end.
    last: Option<u64>,
    /// The notification it came from, removed from the spool when the object is done.
    notice: Option<ObjectNotice>,
}

/// An object to read.
struct Pending {
    location: Path,
    key: String,
    etag: Option<String>,
    notice: Option<ObjectNotice>,
}

mod notified;
mod queue;
pub use notified::object_location;
use queue::ObjectQueue;

/// The notification side of a source in notification mode.
struct Notifications {
    notices: mpsc::Receiver<ObjectNotice>,
    spool: NoticeSpool,
    /// The webhook's bound address; `None` for a broker feed.
    address: Option<std::net::SocketAddr>,
    stop: CancellationToken,
}

/// See the module docs and [`crate::Source`].
pub struct BucketSource {
    config: BucketSourceConfig,
    bucket: Arc<str>,
    cursor: Cursor,
    /// Objects to read, and notified objects to look for again (see `queue`).
    queue: ObjectQueue,
    notifications: Option<Notifications>,
    reading: Option<Reading>,
    in_flight: HashMap<SplitId, InFlight>,
    /// Objects that could not be read: reported, not acknowledged, retried on restart.
    failed: HashSet<(String, String)>,
    /// Bookkeeping decided but not yet written: objects to mark done (and their notices
    /// to take out of the spool), and spooled notices of objects done already. Kept here
    /// until written, so a `next_events` future dropped mid-write loses none of it (see
    /// [`BucketSource::settle`]).
    finishing: Vec<InFlight>,
    dropping: VecDeque<ObjectNotice>,
    next_listing: Instant,
    /// When each notified object not found yet (see `notified`) was first found missing
    /// (milliseconds since the epoch).
    missing_since: HashMap<(String, String), u64>,
    /// Notices given up, as dead-letter events to hand over.
    given_up: Vec<Event>,
}

impl BucketSource {
    pub async fn connect(config: BucketSourceConfig) -> Result<Self, SourceError> {
        let cursor = Cursor::load(config.cursor_store.clone(), config.cursor_path.clone())
            .await
            .map_err(|message| SourceError::Unavailable {
                connector: CONNECTOR,
                message,
            })?;
        let mut source = Self {
            bucket: Arc::from(config.input_url.as_str()),
            cursor,
            queue: ObjectQueue::default(),
            notifications: None,
            reading: None,
            in_flight: HashMap::new(),
            failed: HashSet::new(),
            finishing: Vec::new(),
            dropping: VecDeque::new(),
            next_listing: Instant::now(),
            missing_since: HashMap::new(),
            given_up: Vec::new(),
            config,
        };
        if let Discovery::Notifications {
            feed,
            filter,
            spool,
        } = source.config.discovery.clone()
        {
            source.start_notifications(feed, filter, spool).await?;
        } else {
            info!(job = %source.config.job, input = %source.config.input_url, done = source.cursor.len(), "bucket source listing");
        }
        Ok(source)
    }

    fn relative_key(&self, location: &Path) -> String {
        let prefix = self.config.input_prefix.as_ref();
        let full = location.as_ref();
        full.strip_prefix(prefix)
            .map_or(full, |rest| rest.trim_start_matches('/'))
            .to_owned()
    }

    /// Lists the prefix; queues objects that are not done, in flight or failed.
    async fn list(&mut self) -> Result<(), SourceError> {
        let prefix =
            (!self.config.input_prefix.as_ref().is_empty()).then_some(&self.config.input_prefix);
        let mut found: Vec<ObjectMeta> = self
            .config
            .input_store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| SourceError::Unavailable {
            connector: CONNECTOR,
            message: format!("listing {}: {e}", self.config.input_url),
        })?;
        found.sort_by(|a, b| a.location.cmp(&b.location));
        let in_flight: HashSet<(String, String)> = self
            .in_flight
            .values()
            .map(|f| (f.key.clone(), f.etag.clone()))
            .collect();
        for meta in found {
            let key = self.relative_key(&meta.location);
            if key
                .split('/')
                .any(|segment| segment.starts_with('_') || segment.starts_with('.'))
            {
                continue;
            }
            let id = (key.clone(), meta.e_tag.clone().unwrap_or_default());
            if self.cursor.is_done(&id.0, &id.1)
                || in_flight.contains(&id)
                || self.failed.contains(&id)
            {
                continue;
            }
            if self
                .reading
                .as_ref()
                .is_some_and(|r| r.key == id.0 && r.etag == id.1)
            {
                continue;
            }
            self.queue.push(Pending {
                location: meta.location,
                key: id.0,
                etag: meta.e_tag,
                notice: None,
            });
        }
        Ok(())
    }

    fn start_reading(&mut self, object: Pending) {
        let Pending {
            location,
            key,
            etag: object_etag,
            notice,
        } = object;
        let etag = object_etag.clone().unwrap_or_default();
        let origin_etag = object_etag.as_deref().map(Arc::from);
        let split = Origin::Object {
            bucket: self.bucket.clone(),
            key: Arc::from(key.as_str()),
            etag: origin_etag.clone(),
            line: 0,
        }
        .split();
        let items = spawn_read(
            self.config.input_store.clone(),
            location,
            resolve(&key, self.config.format, self.config.compression),
            ObjectVersion {
                bucket: self.bucket.clone(),
                key: Arc::from(key.as_str()),
                etag: origin_etag,
            },
        );
        self.reading = Some(Reading {
            split,
            key,
            etag,
            notice,
            items,
            acked: None,
        });
    }

    /// The read of the current object ended: track it until its acknowledgement, or mark
    /// it done (at the next [`Self::settle`]) when nothing is left to acknowledge.
    fn finish_reading(&mut self, reading: Reading, last: Option<u64>) {
        let finished = InFlight {
            key: reading.key,
            etag: reading.etag,
            last,
            notice: reading.notice,
        };
        match last {
            // No records, or every record acknowledged before the reader reported the end.
            None => self.finishing.push(finished),
            Some(last) if reading.acked.is_some_and(|acked| acked >= last as i64) => {
                self.finishing.push(finished);
            }
            Some(_) => {
                self.in_flight.insert(reading.split, finished);
            }
        }
    }
}

impl BucketSource {
    /// Writes the bookkeeping decided so far. Each step is idempotent and its item leaves
    /// the queue only once written, so when the future is dropped mid-write (the platform
    /// selects over `next_events`), the next call writes it again: a done object is never
    /// forgotten and a repeated notice never stays in the spool.
    async fn settle(&mut self) -> Result<(), SourceError> {
        let unavailable = |message| SourceError::Unavailable {
            connector: CONNECTOR,
            message,
        };
        if !self.finishing.is_empty() {
            let done = self.finishing.clone();
            self.complete(&done).await.map_err(unavailable)?;
            self.finishing.drain(..done.len());
        }
        if let Some(notifications) = &self.notifications {
            while let Some(notice) = self.dropping.front() {
                notifications
                    .spool
                    .remove(notice)
                    .await
                    .map_err(unavailable)?;
                self.dropping.pop_front();
            }
        }
        Ok(())
    }

    /// Objects whose records all have durable output: into the cursor, out of the spool.
    async fn complete(&mut self, done: &[InFlight]) -> Result<(), String> {
        let ids: Vec<(String, String)> = done
            .iter()
            .map(|f| (f.key.clone(), f.etag.clone()))
            .collect();
        self.cursor.mark_done(&ids).await?;
        if let Some(notifications) = &self.notifications {
            for finished in done {
                if let Some(notice) = &finished.notice {
                    notifications.spool.remove(notice).await?;
                }
            }
        }
        for (key, _) in &ids {
            info!(job = %self.config.job, object = %key, "object done");
        }
        Ok(())
    }

    /// Waits for what to read next: the next listing, or the next notification.
    async fn discover(&mut self) -> Result<bool, SourceError> {
        if self.notifications.is_some() {
            return self.next_notice().await;
        }
        tokio::time::sleep_until(self.next_listing).await;
        let poll_interval = match &self.config.discovery {
            Discovery::Listing { poll_interval } => *poll_interval,
            Discovery::Notifications { .. } => Duration::from_secs(1),
        };
        // Set once the listing is in: a listing dropped halfway is redone at once.
        self.list().await?;
        self.next_listing = Instant::now() + poll_interval;
        let idle = self.queue.is_empty() && self.config.stop_when_idle;
        if idle && !self.failed.is_empty() {
            // A one-shot run must not end as a success while objects it saw are neither
            // in the output nor in the dead letters.
            return Err(SourceError::Unavailable {
                connector: CONNECTOR,
                message: format!(
                    "{} of the objects found could not be read (see the errors above); they are read again on the next run",
                    self.failed.len()
                ),
            });
        }
        Ok(!idle)
    }
}

/// The object version events read from `spawn_read` name in their origins.
pub(super) struct ObjectVersion {
    pub(super) bucket: Arc<str>,
    pub(super) key: Arc<str>,
    /// `None` when the store gives no etag.
    pub(super) etag: Option<Arc<str>>,
}

/// Reads the object at `location` on a blocking thread (decompression and parsing are
/// synchronous readers, bridged to the object's byte stream): chunks of events, then
/// `Done` or `Failed`. The channel closes without either only when the reader panicked
/// or the receiver went away.
pub(super) fn spawn_read(
    store: Arc<dyn ObjectStore>,
    location: Path,
    (format, compression): (InputFormat, InputCompression),
    object: ObjectVersion,
) -> mpsc::Receiver<ReadItem> {
    let (sender, items) = mpsc::channel(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let make_event = |line: u64, payload: Bytes| {
            Event::from_payload(
                payload,
                Origin::Object {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    etag: object.etag.clone(),
                    line,
                },
            )
        };
        let outcome = read_object(
            &runtime,
            &store,
            &location,
            format,
            compression,
            &sender,
            &make_event,
        );
        let item = match outcome {
            Ok(last) => ReadItem::Done { last },
            Err(error) => ReadItem::Failed(error),
        };
        let _ = sender.blocking_send(item);
    });
    items
}

/// Streams one object through the reader, sending chunks of events. Returns the line of
/// the last record.
fn read_object(
    runtime: &tokio::runtime::Handle,
    store: &Arc<dyn ObjectStore>,
    location: &Path,
    format: InputFormat,
    compression: InputCompression,
    sender: &mpsc::Sender<ReadItem>,
    make_event: &dyn Fn(u64, Bytes) -> Event,
) -> Result<Option<u64>, ReadError> {
    let stream = runtime
        .block_on(store.get(location))
        .map_err(|e| ReadError {
            line: None,
            missing: matches!(e, object_store::Error::NotFound { .. }),
            message: format!("cannot read the object: {e}"),
        })?
        .into_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let input = SyncIoBridge::new_with_handle(StreamReader::new(stream), runtime.clone());
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut last = None;
    let mut consumer_gone = false;
    read_records(input, format, compression, &mut |line, record| {
        last = Some(line);
        chunk.push(match record {
            Record::Read(payload) => make_event(line, payload),
            Record::Unreadable { payload, reason } => Event {
                unreadable: Some(Arc::from(reason)),
                ..make_event(line, payload)
            },
        });
        if chunk.len() >= CHUNK
            && sender
                .blocking_send(ReadItem::Events(std::mem::take(&mut chunk)))
                .is_err()
        {
            consumer_gone = true;
            return false;
        }
        true
    })
    .inspect_err(|_| {
        // Records before the error still go out: they are valid and get processed.
        if !chunk.is_empty() {
            let _ = sender.blocking_send(ReadItem::Events(std::mem::take(&mut chunk)));
        }
    })?;
    if !chunk.is_empty() && !consumer_gone {
        let _ = sender.blocking_send(ReadItem::Events(chunk));
    }
    Ok(last)
}

#[async_trait]
impl Source for BucketSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        loop {
            self.settle().await?;
            if !self.given_up.is_empty() {
                return Ok(Some(std::mem::take(&mut self.given_up)));
            }
            if let Some(reading) = &mut self.reading {
                let item = reading.items.recv().await;
                if let Some(ReadItem::Events(events)) = item {
                    return Ok(Some(events));
                }
                let Some(reading) = self.reading.take() else {
                    continue;
                };
                let object = format!(
                    "{}/{}",
                    self.config.input_url.trim_end_matches('/'),
                    reading.key
                );
                match item {
                    Some(ReadItem::Done { last }) => self.finish_reading(reading, last),
                    Some(ReadItem::Failed(failure))
                        if failure.missing && reading.notice.is_some() =>
                    {
                        self.notified_object_missing(reading, &failure.message);
                    }
                    Some(ReadItem::Failed(failure)) => {
                        error!(job = %self.config.job, %object, line = failure.line, error = %failure.message, "cannot read object; it is not acknowledged and is retried when the job restarts");
                        self.failed.insert((reading.key, reading.etag));
                    }
                    _ => {
                        warn!(job = %self.config.job, %object, "object reader stopped unexpectedly; the object is retried when the job restarts");
                        self.failed.insert((reading.key, reading.etag));
                    }
                }
                continue;
            }
            if let Some(object) = self.queue.pop() {
                self.start_reading(object);
                continue;
            }
            if !self.discover().await? {
                return Ok(None);
            }
        }
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        let mut done = Vec::new();
        for (split, range) in delta.iter() {
            if let Some(reading) = &mut self.reading
                && reading.split == *split
            {
                reading.acked = Some(reading.acked.map_or(range.last, |a| a.max(range.last)));
            }
            let complete = self
                .in_flight
                .get(split)
                .is_some_and(|f| f.last.is_some_and(|last| range.last >= last as i64));
            if complete && let Some(finished) = self.in_flight.remove(split) {
                done.push(finished);
            }
        }
        if done.is_empty() {
            return Ok(());
        }
        // Through `finishing`, so a failed write is tried again by the next `settle`.
        self.finishing.extend(done);
        let done = self.finishing.clone();
        self.complete(&done)
            .await
            .map_err(|message| SourceError::Ack {
                connector: CONNECTOR,
                positions: delta.to_string(),
                message,
            })?;
        self.finishing.drain(..done.len());
        Ok(())
    }

    fn backlog(&self) -> Option<u64> {
        Some(self.queue.len() as u64 + u64::from(self.reading.is_some()))
    }
}
