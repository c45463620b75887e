//! The AMQP source against a real RabbitMQ (`SLUICE_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test uses its own uniquely named queue
//! and deletes it at the end. Dropping a connection from the server side uses
//! `rabbitmqctl close_connection` on the source's named connection only, so tests running
//! at the same time are not disturbed.
//!
//! Every wait is bounded and checks a condition, never a duration.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{AmqpSource, AmqpSourceConfig};
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::{Event, Origin};
use crate::source::{Source, SourceError};

/// Bound on every wait for the broker.
const DEADLINE: Duration = Duration::from_secs(30);
const TIMESTAMP_S: u64 = 1_700_000_000;

fn broker_url() -> String {
    std::env::var("SLUICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{nanos:x}-{}", std::process::id())
}

/// A test's own queue and a publishing connection (publisher confirms on).
struct Broker {
    queue: String,
    job: String,
    connection: Connection,
    channel: Channel,
}

impl Broker {
    /// A fresh name; the queue is declared (non-durable) unless the source will declare it.
    async fn new(prefix: &str, declare_queue: bool) -> Broker {
        let connection = Connection::connect(&broker_url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let queue = unique(&format!("sluice-test-{prefix}"));
        if declare_queue {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Broker {
            job: unique(prefix),
            queue,
            connection,
            channel,
        }
    }

    fn config(&self) -> AmqpSourceConfig {
        let mut config = AmqpSourceConfig::new(&self.job, broker_url(), &self.queue);
        config.prefetch = 100;
        config
    }

    /// Publishes to the default exchange (straight to the queue) and waits for the
    /// broker's confirms. Message `n` has payload `{"n":n}`, message id `m-n`, headers
    /// and a timestamp.
    async fn publish(&self, numbers: std::ops::Range<usize>) {
        for n in numbers {
            self.publish_to("", &self.queue, n).await;
        }
    }

    async fn publish_to(&self, exchange: &str, routing_key: &str, n: usize) {
        let mut headers = FieldTable::default();
        headers.insert(
            "trace".into(),
            AMQPValue::LongString(LongString::from(format!("t-{n}"))),
        );
        headers.insert("attempt".into(), AMQPValue::LongInt(n as i32));
        headers.insert("flag".into(), AMQPValue::Boolean(true));
        headers.insert(
            "raw".into(),
            AMQPValue::ByteArray(ByteArray::from(vec![0xff, 0x00])),
        );
        headers.insert("nothing".into(), AMQPValue::Void);
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(format!("m-{n}")))
            .with_timestamp(TIMESTAMP_S + n as u64)
            .with_headers(headers);
        let confirmation = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                payload_of(n).as_bytes(),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            matches!(confirmation, Confirmation::Ack(_)),
            "{confirmation:?}"
        );
    }

    /// Ready messages and consumers of the queue (passive declare).
    async fn counts(&self) -> (u32, u32) {
        let queue = self
            .channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        (queue.message_count(), queue.consumer_count())
    }

    /// Asserts nothing is left in the queue once no consumer holds it (so nothing was
    /// left unacknowledged either), then deletes it.
    async fn finish(self) {
        wait_until("the queue has no consumer", || async {
            self.counts().await.1 == 0
        })
        .await;
        assert_eq!(self.counts().await.0, 0, "messages left in the queue");
        self.channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        self.connection.close(200, "OK".into()).await.unwrap();
    }

    /// Closes the source's connection from the server side.
    async fn drop_source_connection(&self) {
        let name = format!("sluice-{}", self.job);
        let mut closed = 0;
        let started = Instant::now();
        while closed == 0 {
            assert!(started.elapsed() < DEADLINE, "no connection named {name}");
            closed = close_connections_named(&name).await;
        }
    }
}

/// `rabbitmqctl close_connection` for every connection whose client-provided name is
/// `name`; returns how many there were. (The JSON formatter prints pids in a form
/// `close_connection` does not take, so the table output is read: one line per
/// connection, the pid, a tab, then the client properties with the name quoted.)
async fn close_connections_named(name: &str) -> usize {
    let listed = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "--silent",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        listed.status.success(),
        "rabbitmqctl list_connections: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let quoted = format!("\"{name}\"");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some((pid, properties)) = line.split_once('\t') else {
            continue;
        };
        if !properties.contains(&quoted) {
            continue;
        }
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid.trim(), "test drops the connection"])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "rabbitmqctl close_connection {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        closed += 1;
    }
    closed
}

fn payload_of(n: usize) -> String {
    format!(r#"{{"n":{n}}}"#)
}

fn amqp(event: &Event) -> (i64, u64, Option<&str>, &str, &str, bool) {
    match &event.origin {
        Origin::Amqp {
            seq,
            delivery_tag,
            message_id,
            exchange,
            routing_key,
            redelivered,
            ..
        } => (
            *seq,
            *delivery_tag,
            message_id.as_deref(),
            exchange,
            routing_key,
            *redelivered,
        ),
        other => panic!("not an amqp origin: {other:?}"),
    }
}

fn seq(event: &Event) -> i64 {
    amqp(event).0
}

fn number(event: &Event) -> usize {
    let value: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    value["n"].as_u64().unwrap() as usize
}

/// Takes events until `count` have arrived; panics if they do not within [`DEADLINE`].
async fn collect(source: &mut AmqpSource, count: usize) -> Vec<Event> {
    let started = Instant::now();
    let mut events = Vec::new();
    while events.len() < count {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, source.next_events()).await {
            Ok(Ok(Some(chunk))) => {
                assert!(!chunk.is_empty(), "a chunk is never empty");
                events.extend(chunk);
            }
            Ok(Ok(None)) => panic!("an amqp source never ends"),
            Ok(Err(error)) => panic!("source failed: {error}"),
            Err(_) => panic!("got {} of {count} events within {DEADLINE:?}", events.len()),
        }
    }
    assert_eq!(events.len(), count, "more events than expected");
    events
}

/// Asserts that no event arrives for a while.
async fn assert_nothing_more(source: &mut AmqpSource) {
    if let Ok(result) = tokio::time::timeout(Duration::from_secs(1), source.next_events()).await {
        panic!("expected no more events, got {result:?}");
    }
}

async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn delta(queue: &str, first: i64, last: i64) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    delta.record(SplitId::amqp(queue), first).unwrap();
    if last > first {
        delta.record(SplitId::amqp(queue), last).unwrap();
    }
    delta
}

fn header<'a>(event: &'a Event, name: &str) -> Option<&'a [u8]> {
    event
        .headers
        .iter()
        .find(|header| header.name == name)
        .unwrap_or_else(|| panic!("no header {name}: {:?}", event.headers))
        .value
        .as_deref()
}

#[tokio::test]
async fn delivers_payload_headers_and_metadata_in_order() {
    let broker = Broker::new("order", true).await;
    broker.publish(0..20).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let events = collect(&mut source, 20).await;
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.payload, payload_of(n).as_bytes(), "payload order");
        assert_eq!(event.key, None);
        assert_eq!(
            event.timestamp_ms,
            Some((TIMESTAMP_S + n as u64) as i64 * 1000)
        );
        let (seq, tag, message_id, exchange, routing_key, redelivered) = amqp(event);
        assert_eq!(seq, n as i64 + 1, "positions count from 1");
        assert_eq!(tag, n as u64 + 1, "first channel: tags from 1");
        assert_eq!(message_id, Some(format!("m-{n}").as_str()));
        assert_eq!(exchange, "");
        assert_eq!(routing_key, broker.queue);
        assert!(!redelivered);
        assert_eq!(event.origin.split(), SplitId::amqp(&broker.queue));
        assert_eq!(header(event, "trace"), Some(format!("t-{n}").as_bytes()));
        assert_eq!(header(event, "attempt"), Some(n.to_string().as_bytes()));
        assert_eq!(header(event, "flag"), Some(&b"true"[..]));
        assert_eq!(header(event, "raw"), Some(&[0xff, 0x00][..]));
        assert_eq!(header(event, "nothing"), None);
        assert_eq!(event.headers.len(), 5);
    }
    let json = events[3].origin.to_json();
    assert_eq!(json["message_id"], "m-3");
    assert_eq!(json["seq"], 4);
    assert_eq!(json["queue"], broker.queue.as_str());
    source.ack(&delta(&broker.queue, 1, 20)).await.unwrap();
    wait_until("acks reach the broker", || async {
        source.unacked() == 0 && broker.counts().await.0 == 0
    })
    .await;
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn ack_covers_exactly_the_acked_deliveries() {
    let broker = Broker::new("ack", true).await;
    broker.publish(0..10).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let events = collect(&mut source, 10).await;
    assert_eq!(seq(&events[5]), 6);
    source.ack(&delta(&broker.queue, 1, 6)).await.unwrap();
    assert_eq!(source.unacked(), 4);
    // Acknowledging the same positions again sends nothing (a second ack of a tag would
    // make the broker close the channel).
    source.ack(&delta(&broker.queue, 1, 6)).await.unwrap();
    source.close().await;
    // Closing without acking returns the 4 others to the queue.
    wait_until("the 4 unacked messages are back", || async {
        broker.counts().await == (4, 0)
    })
    .await;

    let mut again = AmqpSource::connect(broker.config()).await.unwrap();
    let redelivered = collect(&mut again, 4).await;
    assert_eq!(
        redelivered.iter().map(number).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    assert!(
        redelivered.iter().all(|event| amqp(event).5),
        "redelivered flag"
    );
    assert_nothing_more(&mut again).await;
    again.ack(&delta(&broker.queue, 1, 4)).await.unwrap();
    assert_eq!(again.unacked(), 0);
    again.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn declares_a_durable_queue_and_binds_it() {
    let broker = Broker::new("bind", false).await;
    let mut config = broker.config();
    let topic = unique("clicks");
    config.declare = true;
    config.exchange = Some("amq.topic".into());
    config.routing_keys = vec![format!("{topic}.*"), format!("{topic}-exact")];
    let mut source = AmqpSource::connect(config).await.unwrap();
    broker
        .publish_to("amq.topic", &format!("{topic}.eu"), 1)
        .await;
    broker.publish_to("amq.topic", "elsewhere", 2).await;
    broker
        .publish_to("amq.topic", &format!("{topic}-exact"), 3)
        .await;
    let events = collect(&mut source, 2).await;
    assert_eq!(events.iter().map(number).collect::<Vec<_>>(), vec![1, 3]);
    let (_, _, _, exchange, routing_key, _) = amqp(&events[0]);
    assert_eq!(exchange, "amq.topic");
    assert_eq!(routing_key, format!("{topic}.eu"));
    assert_nothing_more(&mut source).await;
    source.ack(&delta(&broker.queue, 1, 2)).await.unwrap();
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn reconnects_with_monotonic_positions_after_the_server_drops_it() {
    let broker = Broker::new("reconnect", true).await;
    broker.publish(0..5).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let before = collect(&mut source, 5).await;
    assert_eq!(
        before.iter().map(seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    broker.drop_source_connection().await;
    broker.publish(5..8).await;
    // The five unacknowledged deliveries come again on the new channel, then the new ones.
    let after = collect(&mut source, 8).await;
    let positions: Vec<i64> = before.iter().chain(&after).map(seq).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "positions grow across the reconnection: {positions:?}"
    );
    assert_eq!(
        after.iter().map(number).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6, 7]
    );
    assert!(after[..5].iter().all(|event| amqp(event).5), "redelivered");
    assert!(after[5..].iter().all(|event| !amqp(event).5));
    assert_eq!(amqp(&after[0]).1, 1, "tags restart on the new channel");

    // The platform acknowledges everything it holds: the old channel's positions are
    // skipped, the new channel's acknowledged.
    let last = seq(&after[7]);
    source.ack(&delta(&broker.queue, 1, last)).await.unwrap();
    assert_eq!(source.unacked(), 0);
    wait_until("acks reach the broker", || async {
        broker.counts().await.0 == 0
    })
    .await;
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn a_failed_ack_replaces_the_channel_and_its_deliveries_come_again() {
    let broker = Broker::new("reset", true).await;
    broker.publish(0..3).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let before = collect(&mut source, 3).await;
    // What a failed basic.ack does: the channel, which may now hold deliveries nobody
    // will acknowledge, is replaced.
    source.reset_live_session();
    let after = collect(&mut source, 3).await;
    assert_eq!(after.iter().map(number).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(after.iter().all(|event| amqp(event).5), "redelivered");
    assert_eq!(after.iter().map(seq).collect::<Vec<_>>(), vec![4, 5, 6]);
    source
        .ack(&delta(&broker.queue, seq(&before[0]), 6))
        .await
        .unwrap();
    assert_eq!(source.unacked(), 0);
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn reports_backlog_of_ready_and_unacked_messages() {
    let broker = Broker::new("backlog", true).await;
    broker.publish(0..30).await;
    let mut config = broker.config();
    config.prefetch = 10;
    let mut source = AmqpSource::connect(config).await.unwrap();
    let first = collect(&mut source, 10).await;
    // 20 ready in the queue plus the 10 this source holds.
    wait_until("backlog of 30", || {
        let backlog = source.backlog();
        async move { backlog == Some(30) }
    })
    .await;
    source
        .ack(&delta(&broker.queue, 1, seq(&first[9])))
        .await
        .unwrap();
    // The broker sends the next ten only once the first ten are acknowledged.
    for _ in 0..2 {
        let more = collect(&mut source, 10).await;
        source
            .ack(&delta(&broker.queue, seq(&more[0]), seq(&more[9])))
            .await
            .unwrap();
    }
    wait_until("backlog drains to 0", || {
        let backlog = source.backlog();
        async move { backlog == Some(0) }
    })
    .await;
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn close_is_prompt_and_final() {
    let broker = Broker::new("close", true).await;
    broker.publish(0..3).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    collect(&mut source, 3).await;
    let started = Instant::now();
    source.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        started.elapsed()
    );
    assert!(matches!(
        source.next_events().await,
        Err(SourceError::Internal { .. })
    ));
    assert!(source.ack(&delta(&broker.queue, 1, 3)).await.is_err());
    source.close().await; // idempotent
    wait_until("the 3 messages are back", || async {
        broker.counts().await == (3, 0)
    })
    .await;

    // Closing while reconnecting is prompt too.
    let mut config = broker.config();
    config.min_backoff = Duration::from_secs(3);
    config.max_backoff = Duration::from_secs(3);
    let mut source = AmqpSource::connect(config).await.unwrap();
    collect(&mut source, 3).await;
    broker.drop_source_connection().await;
    let started = Instant::now();
    source.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        started.elapsed()
    );
    drain(&broker).await;
    broker.finish().await;
}

/// Consumes and acknowledges whatever the queue holds, with a fresh source.
async fn drain(broker: &Broker) {
    wait_until("the queue has no consumer", || async {
        broker.counts().await.1 == 0
    })
    .await;
    let (ready, _) = broker.counts().await;
    if ready == 0 {
        return;
    }
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let events = collect(&mut source, ready as usize).await;
    source
        .ack(&delta(&broker.queue, 1, seq(events.last().unwrap())))
        .await
        .unwrap();
    source.close().await;
}

#[tokio::test]
async fn first_connection_errors_say_whose_fault() {
    let broker = Broker::new("errors", false).await;
    // A queue that does not exist, without declare: the user's to fix.
    let err = AmqpSource::connect(broker.config()).await.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("NOT-FOUND"), "{err}");

    let mut wrong_password = broker.config();
    wrong_password.url = "amqp://guest:wrong-secret@127.0.0.1:5672/%2f".into();
    let err = AmqpSource::connect(wrong_password).await.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("ACCESS-REFUSED"), "{err}");
    assert!(!err.to_string().contains("wrong-secret"), "{err}");

    let mut nothing_there = broker.config();
    nothing_there.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let err = AmqpSource::connect(nothing_there).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable { .. }), "{err}");

    let mut other_split = AmqpSource::connect({
        let mut config = broker.config();
        config.declare = true;
        config
    })
    .await
    .unwrap();
    let err = other_split
        .ack(&delta("another-queue", 1, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Internal { .. }), "{err}");
    other_split.close().await;
    broker.finish().await;
}
