//! The bare limit: the least a program must do to move Kafka JSON events into Parquet with
//! the same guarantees of order and durability as one commit at the end, and nothing else.
//! rdkafka consumer → arrow-json decoder → zstd Parquet, one local file → commit offsets.
//! No platform, no function, no object store.
//!
//! ```sh
//! target/release/examples/bare_kafka_parquet BROKERS TOPIC GROUP OUT.parquet EVENTS
//! ```
//!
//! Consumes until EVENTS messages were read, writes them to one file (row groups of
//! 10,000 decoded rows), closes it, then commits the group's offsets synchronously. The
//! columns are the comparison benchmark's events ([`bench_schema`]). Run by
//! `bench/compare.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_json::ReaderBuilder;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// The events of the comparison benchmark: 10 columns.
fn bench_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Int64, true),
        Field::new("session_id", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new("referrer", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("device", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
    ]))
}

const ROWS_PER_FLUSH: usize = 10_000;

/// Says on stderr when the group join has assigned the partitions, for the comparison's
/// "after the join" time.
struct Announce;

impl ClientContext for Announce {}

impl ConsumerContext for Announce {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            eprintln!("kafka partitions assigned");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, group, out, events] = &args[..] else {
        panic!("usage: bare_kafka_parquet BROKERS TOPIC GROUP OUT.parquet EVENTS");
    };
    let events: usize = events.parse().expect("EVENTS is a number");
    let consumer: BaseConsumer<Announce> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.queue.backoff.ms", "20")
        .create_with_context(Announce)
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");

    let schema = bench_schema();
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(ROWS_PER_FLUSH)
        .build_decoder()
        .unwrap();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let file = std::fs::File::create(out).expect("create the output file");
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).unwrap();
    let mut next_offsets = BTreeMap::<i32, i64>::new();
    let mut read = 0;
    let mut pending = 0;
    while read < events {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("consume");
        let payload = message.payload().unwrap_or_default();
        decoder.decode(payload).expect("valid JSON");
        decoder.decode(b"\n").unwrap();
        next_offsets.insert(message.partition(), message.offset() + 1);
        read += 1;
        pending += 1;
        if pending == ROWS_PER_FLUSH {
            writer.write(&decoder.flush().unwrap().unwrap()).unwrap();
            pending = 0;
        }
    }
    if let Some(rest) = decoder.flush().unwrap() {
        writer.write(&rest).unwrap();
    }
    writer.close().expect("close the Parquet file");
    let mut offsets = TopicPartitionList::new();
    for (partition, next) in next_offsets {
        offsets
            .add_partition_offset(topic, partition, Offset::Offset(next))
            .unwrap();
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .expect("commit offsets");
}
