//! The background task that keeps one consumer on the queue, reconnecting when it is lost.
//!
//! A *session* is one connection with two channels: the consuming channel (`basic.qos`,
//! optional declare and bindings, `basic.consume` with manual acks) and a status channel
//! for the passive `queue.declare` that reads the queue depth about once a second (a
//! failed passive declare closes its channel, so it never shares the consuming one).
//! Each session has a new *generation*; see `inflight` for why.
//!
//! The task:
//! 1. turns deliveries into events, numbering them in the shared [`Inflight`] map, and
//!    sends them in chunks (up to [`MAX_CHUNK_EVENTS`]) through a bounded channel; while
//!    the channel is full, at most `prefetch` deliveries pile up (the broker sends no more);
//! 2. when the session fails (connection dropped or closed by the broker, channel error,
//!    consumer cancelled by the broker, an ack that could not be sent), forgets the session's unacknowledged deliveries
//!    — the broker requeues them — and opens a new session with backoff (`min_backoff`
//!    doubling to `max_backoff`), forever, until cancelled;
//! 3. when cancelled, cancels the consumer and closes the channels and the connection;
//!    the broker requeues every unacknowledged delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::AmqpSourceConfig;
use super::inflight::Inflight;
use crate::event::{Event, Header, Origin};
use crate::source::SourceError;

/// Most events in one chunk handed to the platform.
pub(super) const MAX_CHUNK_EVENTS: usize = 1000;
/// How often the queue depth is read.
pub(super) const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on opening a connection and on each request made while opening a session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each step of closing a session, so closing stays prompt on a dead connection.
const CLOSE_STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// `ready` value while the queue depth is unknown.
const UNKNOWN: u64 = u64::MAX;

/// State shared by the source and its task.
#[derive(Debug, Default)]
pub(super) struct Shared {
    inflight: Mutex<Inflight>,
    /// The consuming channel of the live generation, for acks.
    channel: Mutex<Option<(u64, Channel)>>,
    /// Ready messages in the queue at the last read, or [`UNKNOWN`].
    ready: AtomicU64,
    /// Wakes the task when an ack failed on the channel of `reset_generation`: that
    /// channel may hold deliveries that will never be acknowledged, so it is replaced.
    reset: tokio::sync::Notify,
    reset_generation: AtomicU64,
}

impl Shared {
    pub(super) fn new() -> Self {
        Self {
            ready: AtomicU64::new(UNKNOWN),
            ..Self::default()
        }
    }

    /// The bookkeeping of unacknowledged deliveries. A panic while it was held cannot
    /// leave it half-updated (each method finishes its changes before returning), so a
    /// poisoned lock is used as is.
    pub(super) fn inflight(&self) -> MutexGuard<'_, Inflight> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The consuming channel, if `generation` is still the live one.
    pub(super) fn channel_of(&self, generation: u64) -> Option<Channel> {
        let channel = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        channel
            .as_ref()
            .filter(|(live, _)| *live == generation)
            .map(|(_, channel)| channel.clone())
    }

    /// Asks the task to replace the session of `generation` (its unacknowledged
    /// deliveries are then redelivered by the broker).
    pub(super) fn request_reset(&self, generation: u64) {
        self.reset_generation.store(generation, Ordering::Relaxed);
        self.reset.notify_one();
    }

    fn set_channel(&self, channel: Option<(u64, Channel)>) {
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = channel;
    }

    /// Ready messages plus the source's own unacknowledged ones; `None` before the first
    /// read of the queue depth.
    pub(super) fn backlog(&self) -> Option<u64> {
        match self.ready.load(Ordering::Relaxed) {
            UNKNOWN => None,
            ready => Some(ready.saturating_add(self.inflight().unacked() as u64)),
        }
    }
}

/// Events of one channel generation.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) generation: u64,
    pub(super) events: Vec<Event>,
}

/// One connection consuming the queue.
pub(super) struct Session {
    generation: u64,
    connection: Connection,
    channel: Channel,
    status_channel: Channel,
    consumer: lapin::Consumer,
}

/// Why a session stopped.
enum SessionEnd {
    /// The source is closing or gone.
    Cancelled,
    /// The session failed; a new one is opened.
    Lost(String),
}

/// Opens a session: connects, sets the prefetch, declares and binds when configured, and
/// starts consuming. The returned session's generation is not live yet: the caller makes
/// it so with [`activate`].
pub(super) async fn open_session(
    config: &AmqpSourceConfig,
    uri: &AMQPUri,
    generation: u64,
) -> Result<Session, SourceError> {
    let properties =
        ConnectionProperties::default().with_connection_name(config.connection_name().into());
    let connection = step("connect", Connection::connect_uri(uri.clone(), properties)).await?;
    let channel = step("open a channel", connection.create_channel()).await?;
    step(
        "set the prefetch",
        channel.basic_qos(config.prefetch, BasicQosOptions { global: false }),
    )
    .await?;
    let queue = short(&config.queue)?;
    if config.declare {
        step(
            "declare the queue",
            channel.queue_declare(
                queue.clone(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            ),
        )
        .await?;
        if let Some(exchange) = &config.exchange {
            let keys: Vec<&str> = if config.routing_keys.is_empty() {
                vec![""]
            } else {
                config.routing_keys.iter().map(String::as_str).collect()
            };
            for key in keys {
                step(
                    "bind the queue",
                    channel.queue_bind(
                        queue.clone(),
                        short(exchange)?,
                        short(key)?,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            }
        }
    }
    let status_channel = step("open the status channel", connection.create_channel()).await?;
    let consumer = step(
        "start consuming",
        channel.basic_consume(
            queue,
            ShortString::default(),
            BasicConsumeOptions {
                no_ack: false,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(Session {
        generation,
        connection,
        channel,
        status_channel,
        consumer,
    })
}

/// Makes `session`'s channel the one deliveries are recorded and acknowledged on.
pub(super) fn activate(shared: &Shared, session: &Session) {
    shared.inflight().channel_opened(session.generation);
    shared.set_channel(Some((session.generation, session.channel.clone())));
}

/// Runs one step of opening a session with a time limit, classifying its error.
async fn step<T>(
    what: &str,
    future: impl Future<Output = lapin::Result<T>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(what, &error)),
        Err(_) => Err(SourceError::Unavailable {
            connector: "amqp",
            message: format!("could not {what} within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

/// Errors the user must fix (credentials, permissions, a missing queue or exchange, a
/// queue declared elsewhere with other settings, an unknown vhost) are configuration
/// errors; the rest may pass by retrying.
fn classify(what: &str, error: &lapin::Error) -> SourceError {
    let user_error = is_user_error(error);
    let message = format!("could not {what}: {error}");
    if user_error {
        SourceError::Config {
            connector: "amqp",
            message,
        }
    } else {
        SourceError::Unavailable {
            connector: "amqp",
            message: format!("{message} (retrying may help)"),
        }
    }
}

/// Access refused, a missing queue or exchange, a queue declared with other settings or
/// a vhost the user may not use: the user's to fix, not a retry's.
pub(super) fn is_user_error(error: &lapin::Error) -> bool {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
            ) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
        ),
        ErrorKind::AuthProviderError(_) => true,
        _ => false,
    }
}

fn short(name: &str) -> Result<ShortString, SourceError> {
    ShortString::try_new(name).map_err(|error| SourceError::Config {
        connector: "amqp",
        message: format!("`{name}`: {error}"),
    })
}

/// The task that consumes, reconnects and finally closes. See the module docs.
pub(super) struct SessionTask {
    pub(super) config: AmqpSourceConfig,
    pub(super) uri: AMQPUri,
    pub(super) queue: Arc<str>,
    pub(super) shared: Arc<Shared>,
    pub(super) chunks: mpsc::Sender<Chunk>,
    pub(super) cancel: CancellationToken,
}

impl SessionTask {
    /// Consumes with `first` (already active), then with new sessions as they fail.
    pub(super) async fn run(self, first: Session) {
        let mut session = first;
        loop {
            match self.consume(&mut session).await {
                SessionEnd::Cancelled => {
                    self.close(session).await;
                    return;
                }
                SessionEnd::Lost(reason) => {
                    let generation = session.generation;
                    self.shared.set_channel(None);
                    let dropped = self.shared.inflight().channel_lost(generation);
                    warn!(
                        job = self.config.job,
                        queue = &*self.queue,
                        generation,
                        unacked_redelivered = dropped,
                        reason,
                        "amqp connection lost; reconnecting (the broker redelivers unacknowledged deliveries)"
                    );
                    // The connection is broken or closing; dropping it frees what is left.
                    drop(session);
                    match self.reconnect(generation + 1).await {
                        Some(next) => session = next,
                        None => return,
                    }
                }
            }
        }
    }

    /// Reads deliveries and sends them on in chunks until the session ends.
    async fn consume(&self, session: &mut Session) -> SessionEnd {
        let mut chunk = Vec::new();
        let mut backlog_tick = tokio::time::interval(BACKLOG_INTERVAL);
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return SessionEnd::Cancelled,
                () = self.shared.reset.notified() => {
                    // A reset asked for an older session is stale: ignored.
                    if self.shared.reset_generation.load(Ordering::Relaxed) == session.generation {
                        return SessionEnd::Lost("an acknowledgement failed on the channel".into());
                    }
                }
                _ = backlog_tick.tick() => {
                    if let Err(reason) = self.refresh_ready(&session.status_channel).await {
                        return SessionEnd::Lost(reason);
                    }
                }
                delivery = session.consumer.next(), if chunk.len() < MAX_CHUNK_EVENTS => {
                    let mut received = vec![delivery];
                    // Deliveries already waiting are taken at once, numbered under one
                    // lock, without a turn of this loop each.
                    while received.len() < MAX_CHUNK_EVENTS - chunk.len() {
                        match session.consumer.next().now_or_never() {
                            Some(delivery) => received.push(delivery),
                            None => break,
                        }
                    }
                    if let Err(reason) = self.take(session.generation, received, &mut chunk) {
                        return SessionEnd::Lost(reason);
                    }
                }
                permit = self.chunks.reserve(), if !chunk.is_empty() => match permit {
                    Ok(permit) => permit.send(Chunk {
                        generation: session.generation,
                        events: std::mem::take(&mut chunk),
                    }),
                    // The source is gone.
                    Err(_) => return SessionEnd::Cancelled,
                },
            }
        }
    }

    /// Reads the number of ready messages with a passive declare.
    async fn refresh_ready(&self, status_channel: &Channel) -> Result<(), String> {
        let queue = short(&self.config.queue).map_err(|error| error.to_string())?;
        let declared = tokio::time::timeout(
            CONNECT_TIMEOUT,
            status_channel.queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await;
        match declared {
            Ok(Ok(queue)) => {
                self.shared
                    .ready
                    .store(u64::from(queue.message_count()), Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(error)) => Err(format!("reading the queue depth failed: {error}")),
            Err(_) => Err(format!(
                "reading the queue depth took over {CONNECT_TIMEOUT:?}"
            )),
        }
    }

    /// Numbers the deliveries of `received` (in order, under one lock) and appends their
    /// events to `chunk`; stops at the first error or the end of the consumer, which end
    /// the session (what was numbered before it is lost with the session's channel).
    fn take(
        &self,
        generation: u64,
        received: Vec<Option<lapin::Result<Delivery>>>,
        chunk: &mut Vec<Event>,
    ) -> Result<(), String> {
        let mut inflight = self.shared.inflight();
        for delivery in received {
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => return Err(error.to_string()),
                None => {
                    return Err("the broker cancelled the consumer (was the queue deleted?)".into());
                }
            };
            let seq = inflight.record(generation, delivery.delivery_tag);
            chunk.push(event_from_delivery(delivery, &self.queue, seq));
        }
        Ok(())
    }

    /// Opens sessions with backoff until one works; `None` when cancelled meanwhile.
    async fn reconnect(&self, mut generation: u64) -> Option<Session> {
        let mut backoff = self.config.min_backoff;
        let mut attempt: u32 = 1;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            let opened = tokio::select! {
                () = self.cancel.cancelled() => return None,
                opened = open_session(&self.config, &self.uri, generation) => opened,
            };
            match opened {
                Ok(session) => {
                    activate(&self.shared, &session);
                    info!(
                        job = self.config.job,
                        queue = &*self.queue,
                        generation,
                        attempts = attempt,
                        url = self.config.redacted_url(),
                        "amqp source reconnected, consuming again"
                    );
                    return Some(session);
                }
                Err(error) => {
                    warn!(
                        job = self.config.job,
                        queue = &*self.queue,
                        attempt,
                        next_try_ms = (backoff * 2).min(self.config.max_backoff).as_millis() as u64,
                        %error,
                        "amqp reconnection failed; retrying"
                    );
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    attempt = attempt.saturating_add(1);
                    generation += 1;
                }
            }
        }
    }

    /// Cancels the consumer and closes the channels and the connection, each step
    /// bounded in time. The broker requeues every unacknowledged delivery.
    async fn close(&self, session: Session) {
        self.shared.set_channel(None);
        let tag = session.consumer.tag();
        let steps = async {
            session
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await?;
            session.status_channel.close(200, "OK".into()).await?;
            session.channel.close(200, "OK".into()).await?;
            session.connection.close(200, "OK".into()).await
        };
        match tokio::time::timeout(CLOSE_STEP_TIMEOUT * 4, steps).await {
            Ok(Ok(())) => debug!(
                job = self.config.job,
                queue = &*self.queue,
                "amqp session closed"
            ),
            Ok(Err(error)) => {
                debug!(job = self.config.job, queue = &*self.queue, %error, "amqp session closed with an error (it was already broken)");
            }
            Err(_) => warn!(
                job = self.config.job,
                queue = &*self.queue,
                "closing the amqp session timed out; dropping the connection"
            ),
        }
    }
}

/// Turns a delivery into an event at position `seq`. The payload is moved, not copied.
pub(super) fn event_from_delivery(delivery: Delivery, queue: &Arc<str>, seq: i64) -> Event {
    let properties = &delivery.properties;
    let headers = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .into_iter()
                .map(|(name, value)| Header {
                    name: Arc::from(name.as_str()),
                    value: header_value(value),
                })
                .collect()
        })
        .unwrap_or_default();
    // AMQP timestamps are seconds since the epoch.
    let timestamp_ms = properties
        .timestamp()
        .and_then(|seconds| i64::try_from(seconds).ok())
        .map(|seconds| seconds.saturating_mul(1000));
    let message_id = properties.message_id().as_ref().map(ToString::to_string);
    Event {
        key: None,
        headers,
        timestamp_ms,
        origin: Origin::Amqp {
            queue: Arc::clone(queue),
            seq,
            delivery_tag: delivery.delivery_tag,
            message_id,
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            redelivered: delivery.redelivered,
        },
        payload: Bytes::from(delivery.data),
        unreadable: None,
    }
}

/// A header value as bytes: strings and byte arrays as they are, `void` as no value,
/// numbers, booleans and timestamps as their decimal text, arrays and tables as JSON.
pub(super) fn header_value(value: &AMQPValue) -> Option<Bytes> {
    match value {
        AMQPValue::LongString(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
        AMQPValue::ShortString(text) => Some(Bytes::copy_from_slice(text.as_str().as_bytes())),
        AMQPValue::ByteArray(bytes) => Some(Bytes::copy_from_slice(bytes.as_slice())),
        AMQPValue::Void => None,
        other => Some(Bytes::from(match header_json(other) {
            serde_json::Value::String(text) => text,
            json => json.to_string(),
        })),
    }
}

fn header_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::DecimalValue(decimal) => {
            Value::from(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))
        }
        AMQPValue::ShortString(text) => Value::from(text.as_str()),
        AMQPValue::LongString(text) => Value::from(text.to_string()),
        AMQPValue::ByteArray(bytes) => Value::from(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::FieldArray(array) => {
            Value::Array(array.as_slice().iter().map(header_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .into_iter()
                .map(|(key, value)| (key.to_string(), header_json(value)))
                .collect(),
        ),
        AMQPValue::Void => Value::Null,
    }
}
