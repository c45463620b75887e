//! AMQP fixtures for the end-to-end tests: a publishing connection to the test RabbitMQ
//! (`Env::amqp_url`), queue depth through a passive declare, and dropping a job's
//! connection from the server side with `rabbitmqctl` (which must be on PATH and allowed
//! to talk to the node, as root is).
#![allow(dead_code, clippy::unwrap_used)]

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{Click, Env};

/// A connection to the test broker with publisher confirms on.
pub struct AmqpAdmin {
    connection: Connection,
    channel: Channel,
}

impl AmqpAdmin {
    pub async fn connect(env: &Env) -> AmqpAdmin {
        let connection = Connection::connect(&env.amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to the test rabbitmq");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        AmqpAdmin {
            connection,
            channel,
        }
    }

    /// Declares a durable queue.
    pub async fn declare_queue(&self, queue: &str) {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Declares a durable topic exchange.
    pub async fn declare_exchange(&self, exchange: &str) {
        self.channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    pub async fn delete_exchange(&self, exchange: &str) {
        self.channel
            .exchange_delete(exchange.into(), Default::default())
            .await
            .unwrap();
    }

    /// Publishes persistent messages straight to `queue` (default exchange), each with
    /// its `message_id`, and waits until the broker confirms every one.
    pub async fn publish(&self, queue: &str, messages: &[(String, String)]) {
        for chunk in messages.chunks(500) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for (message_id, payload) in chunk {
                let properties = BasicProperties::default()
                    .with_message_id(ShortString::from(message_id.as_str()))
                    .with_delivery_mode(2);
                let confirm = self
                    .channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        payload.as_bytes(),
                        properties,
                    )
                    .await
                    .unwrap();
                confirms.push(confirm);
            }
            for confirm in confirms {
                let confirmation = confirm.await.unwrap();
                assert!(
                    matches!(confirmation, Confirmation::Ack(_)),
                    "{confirmation:?}"
                );
            }
        }
    }

    /// Declares `queue` and fills it with `count` numbered clicks, each with its event id
    /// as `message_id`; returns the clicks.
    pub async fn queue_of_clicks(&self, queue: &str, count: usize) -> Vec<Click> {
        self.declare_queue(queue).await;
        let clicks: Vec<Click> = (0..count).map(Click::numbered).collect();
        let messages: Vec<(String, String)> = clicks
            .iter()
            .map(|click| (click.event_id.clone(), click.json()))
            .collect();
        self.publish(queue, &messages).await;
        assert_eq!(self.counts(queue).await, (count as u32, 0));
        clicks
    }

    /// Ready messages and consumers of `queue`.
    pub async fn counts(&self, queue: &str) -> (u32, u32) {
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        (declared.message_count(), declared.consumer_count())
    }

    pub async fn delete_queue(self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        self.connection.close(200, "OK".into()).await.unwrap();
    }
}

#[allow(unused_imports)]
pub use sluice_connectors::testing::rabbitmq::close_connections_named;

/// Messages of `queue` delivered to a consumer and not yet acknowledged, as the broker
/// counts them (`rabbitmqctl list_queues`).
pub async fn unacknowledged(queue: &str) -> u64 {
    let listed = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "name",
            "messages_unacknowledged",
            "--no-table-headers",
            "--silent",
        ])
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        listed.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find_map(|line| {
            let (name, count) = line.rsplit_once('\t')?;
            (name.trim() == queue).then(|| count.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("queue {queue} is not listed"))
}
