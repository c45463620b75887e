//! The AMQP ceiling: how fast the broker hands one consumer a queue of persistent
//! messages when the consumer does nothing with them. lapin, `prefetch` 10,000 (Sluice's
//! default), manual acknowledgements, one `multiple` ack per half window (when Sluice's
//! source reports ack pressure), no decoding, no output. Whatever a consumer that writes
//! Parquet reaches on the same queue is at most this.
//!
//! ```sh
//! scripts/services.sh start && eval "$(scripts/services.sh env)"
//! cargo build --profile perf --example bare_amqp
//! target/perf/examples/bare_amqp [EVENTS] [RUNS]
//! ```
//!
//! EVENTS (default 50,000) messages of ~285 bytes — the comparison benchmark's, with
//! `message_id` set and `delivery_mode` 2 — are published to a fresh durable queue per
//! run (with publisher confirms, before the clock starts); time runs from connecting to
//! the last ack sent. Prints every run and the median.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::amqp::AmqpAdmin;
use common::*;
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

const PREFETCH: u16 = 10_000;

/// A message of ~285 bytes, like the comparison benchmark's events.
fn payload(i: usize) -> String {
    format!(
        r#"{{"event_id":"e-{i:09}","user_id":{user},"session_id":"s-{i:012x}","action":"page_view","url":"https://shop.example.com/products/category-{category}/item-{item}?utm_source=newsletter","referrer":"https://www.search.example/?q=item+{item}","country":"DE","device":"mobile","amount":{amount}.25,"ts":1764000000000}}"#,
        user = i % 100_003,
        category = i % 40,
        item = i % 9_973,
        amount = i % 500,
    )
}

/// Consumes `events` messages of `queue` and acknowledges them; returns the seconds taken.
async fn consume(url: &str, queue: &str, events: usize) -> f64 {
    let started = Instant::now();
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let half = usize::from(PREFETCH / 2);
    let (mut read, mut unacked) = (0, 0);
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.unwrap();
        read += 1;
        unacked += 1;
        if unacked == half || read == events {
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .unwrap();
            unacked = 0;
        }
        if read == events {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    connection.close(200, "OK".into()).await.unwrap();
    seconds
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map_or(50_000, |a| a.parse().expect("EVENTS is a number"));
    let runs: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("RUNS is a number"));
    let env = env();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let messages: Vec<(String, String)> = (0..events)
        .map(|i| (format!("m-{i}"), payload(i)))
        .collect();
    let mut seconds = Vec::new();
    for run in 0..runs {
        let admin = runtime.block_on(AmqpAdmin::connect(&env));
        let queue = unique("bare-amqp");
        runtime.block_on(admin.declare_queue(&queue));
        runtime.block_on(admin.publish(&queue, &messages));
        let taken = runtime.block_on(consume(&env.amqp_url, &queue, events));
        println!(
            "run {run}: {events} messages in {taken:.2} s, {:.1}k msgs/s",
            events as f64 / taken / 1000.0
        );
        seconds.push(taken);
        runtime.block_on(admin.delete_queue(&queue));
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "bare lapin consumer (receive and ack only), median of {runs}: {:.1}k msgs/s",
        events as f64 / median / 1000.0
    );
}
