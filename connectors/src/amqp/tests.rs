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

mod more;
