//! The AMQP source against a real RabbitMQ (`SLUICE_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test uses its own uniquely named queue
//! and deletes it at the end. Dropping a connection from the server side uses
//! `rabbitmqctl close_connection` on the source's named connection only, so tests running
//! at the same time are not disturbed.
//!
//! Every wait is bounded and checks a condition, never a duration.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, ByteArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{AmqpSource, AmqpSourceConfig};
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::{Event, Origin};
use crate::source::{Source, SourceError};
use crate::testing::rabbitmq::{broker_url, close_connections_named};
use crate::testing::{DEADLINE, assert_nothing_more, collect, unique, wait_until};

const TIMESTAMP_S: u64 = 1_700_000_000;

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

fn delta(queue: &str, first: i64, last: i64) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    delta.record(&SplitId::amqp(queue), first).unwrap();
    if last > first {
        delta.record(&SplitId::amqp(queue), last).unwrap();
    }
    delta
}

fn header<'a>(event: &'a Event, name: &str) -> Option<&'a [u8]> {
    event
        .headers
        .iter()
        .find(|header| &*header.name == name)
        .unwrap_or_else(|| panic!("no header {name}: {:?}", event.headers))
        .value
        .as_deref()
}

mod conformance;
mod connection;
mod delivery;
