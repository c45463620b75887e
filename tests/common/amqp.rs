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
use std::time::Duration;

use super::{
    Click, Env, JobDir, Sluice, assert_rows_are_the_clicks, count_ids, read_rows, wait_for,
};

/// The clickstream example in stream mode on `queue`, with at most `prefetch` messages
/// delivered and not yet acknowledged.
pub fn example_stream_job(env: &Env, queue: &str, prefetch: usize) -> JobDir {
    JobDir::new_amqp(env, queue, |job| {
        job.set("trigger.amqp", "prefetch", prefetch)
            .set("function", "command", ["python3", "transform.py"])
            .set("function", "mode", "stream")
            .set("function", "timeout", "30s")
    })
}

/// The example job in stream mode on a fresh queue of clicks, caught in the middle of
/// consuming them (see [`AmqpAdmin::wait_mid_consumption`]): for tests that interrupt
/// it there.
pub struct MidConsumption {
    pub env: Env,
    pub admin: AmqpAdmin,
    pub queue: String,
    pub clicks: Vec<Click>,
    pub job: JobDir,
    pub sluice: Sluice,
}

impl MidConsumption {
    /// A queue named after `tag` with `events` clicks, consumed with `prefetch`.
    pub async fn start(tag: &str, events: usize, prefetch: usize) -> MidConsumption {
        let env = super::env();
        let admin = AmqpAdmin::connect(&env).await;
        let queue = super::unique(tag);
        let clicks = admin.queue_of_clicks(&queue, events).await;
        let job = example_stream_job(&env, &queue, prefetch);
        let mut sluice = Sluice::run(&env, &job, "run");
        admin
            .wait_mid_consumption(&queue, &mut sluice, events, prefetch)
            .await;
        MidConsumption {
            env,
            admin,
            queue,
            clicks,
            job,
            sluice,
        }
    }
}

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

    /// Waits until `sluice`, consuming `events` messages of `queue` with `prefetch`, is in
    /// the middle: some acknowledged (gone from the queue), many still ready. Panics when
    /// it went too fast for something to land in the middle, or made no progress.
    pub async fn wait_mid_consumption(
        &self,
        queue: &str,
        sluice: &mut Sluice,
        events: usize,
        prefetch: usize,
    ) {
        let middle = (events - 2 * prefetch) as u32;
        let mut ready = u32::MAX;
        wait_for(
            "consumption to reach the middle",
            Duration::from_secs(120),
            async || {
                sluice.assert_running();
                ready = self.counts(queue).await.0;
                ready <= middle
            },
        )
        .await;
        assert!(
            ready >= prefetch as u32,
            "consumption went too fast to act in the middle ({ready} left)"
        );
    }

    /// Waits until `sluice` has drained `queue` (nothing ready, its one consumer on it),
    /// stops it cleanly, and asserts nothing was left unacknowledged: closing the
    /// connection would have requeued it.
    pub async fn drain_then_stop(&self, queue: &str, sluice: &mut Sluice) {
        wait_for("the queue to drain", Duration::from_secs(60), async || {
            sluice.assert_running();
            self.counts(queue).await == (0, 1)
        })
        .await;
        sluice.stop_cleanly(Duration::from_secs(30));
        wait_for(
            "the job's consumer to go",
            Duration::from_secs(10),
            async || self.counts(queue).await.1 == 0,
        )
        .await;
        assert_eq!(
            self.counts(queue).await,
            (0, 0),
            "messages left in the queue"
        );
    }

    /// After the job's connection was interrupted: waits for `sluice` to reconnect and
    /// land every one of `clicks`, drain `queue` and stop; asserts each click landed once
    /// (redeliveries are recognised by `message_id`) and that the loss of the connection
    /// and the reconnection were logged.
    pub async fn finish_after_reconnection(
        &self,
        queue: &str,
        job: &JobDir,
        sluice: &mut Sluice,
        clicks: &[Click],
    ) {
        let env = super::env();
        wait_for(
            "every event in the output",
            Duration::from_secs(180),
            async || {
                sluice.assert_running();
                count_ids(&read_rows(&env, &job.prefix).await).len() == clicks.len()
            },
        )
        .await;
        self.drain_then_stop(queue, sluice).await;
        assert_rows_are_the_clicks(&read_rows(&env, &job.prefix).await, clicks);
        let logs = sluice.logs();
        for logged in ["amqp connection lost", "amqp source reconnected"] {
            assert!(
                logs.contains(logged),
                "{logged:?} not logged; logs:\n{logs}"
            );
        }
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
    let listed = sluice_connectors::testing::rabbitmq::rabbitmqctl(&[
        "list_queues",
        "name",
        "messages_unacknowledged",
        "--no-table-headers",
        "--silent",
    ])
    .await;
    listed
        .lines()
        .find_map(|line| {
            let (name, count) = line.rsplit_once('\t')?;
            (name.trim() == queue).then(|| count.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("queue {queue} is not listed"))
}
