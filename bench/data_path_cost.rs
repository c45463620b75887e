//! What the platform's own steps cost per event, for a batch of the comparison
//! benchmark's events (10 columns, ~285 bytes each) read from Kafka: cutting batches,
//! encoding the function's input (the JSON check included) and decoding its output
//! against the declared schema.
//!
//! ```sh
//! cargo run --profile perf --example data_path_cost -- [RECORDS_PER_BATCH] [ROUNDS]
//! ```
//!
//! Prints, per batch (default 10,000 records, best of 30 rounds), each step's time and
//! nanoseconds per event. No broker and no function are involved, so the figures move
//! little from run to run: a change of a few per cent in one step shows here where the
//! end-to-end comparison (`compare`) cannot tell it from the broker's noise.

#![allow(clippy::unwrap_used)]

#[path = "events.rs"]
mod events;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_connectors::{Event, Header, Origin};
use sluice_platform::batcher::Batcher;
use sluice_platform::function::encode_batch;
use sluice_platform::output::decode::decode_rows;
use sluice_platform::output::schema::OutputSchema;
use sluice_platform::spec::{BatchSpec, InputMode};

/// The comparison benchmark's schema (`bench/compare.rs`).
const COLUMNS: [(&str, &str); 10] = [
    ("event_id", "utf8 not null"),
    ("user_id", "int64"),
    ("session_id", "utf8"),
    ("action", "utf8"),
    ("url", "utf8"),
    ("referrer", "utf8"),
    ("country", "utf8"),
    ("device", "utf8"),
    ("amount", "float64"),
    ("ts", "timestamp_ms"),
];

/// Partitions the events come from, interleaved in runs as a poll chunk delivers them.
const PARTITIONS: i32 = 4;
const RUN: usize = 500;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map_or(10_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(30, |a| a.parse().unwrap());
    let topic: Arc<str> = Arc::from("clicks");
    let headers: Arc<[Header]> = Arc::from(vec![Header {
        name: Arc::from("source"),
        value: Some(Bytes::from_static(b"e2e")),
    }]);
    let events: Vec<Event> = (0..records)
        .map(|i| {
            let mut event = Event::from_payload(
                Bytes::from(events::event(i)),
                Origin::Kafka {
                    topic: Arc::clone(&topic),
                    partition: (i / RUN) as i32 % PARTITIONS,
                    offset: i as i64,
                },
            );
            event.headers = Arc::clone(&headers);
            event
        })
        .collect();
    let spec = BatchSpec {
        max_records: records,
        max_bytes: 64 << 20,
        max_wait: Duration::from_secs(60),
        max_idle: Duration::from_secs(60),
    };
    let ndjson = encode_batch(&events, InputMode::Value);
    let schema = OutputSchema::from_declarations(
        &COLUMNS.map(|(name, declared)| (name.to_owned(), declared.to_owned())),
    )
    .unwrap();

    let best = |run: &mut dyn FnMut() -> Duration| {
        (0..rounds).map(|_| run()).min().unwrap_or(Duration::ZERO)
    };
    let rows: [(&str, Duration); 3] = [
        (
            "cutting batches (`Batcher::push`)",
            best(&mut || {
                let mut batcher = Batcher::new(&spec);
                let copies = events.clone();
                let started = Instant::now();
                let full = batcher.push(copies, Instant::now()).unwrap();
                let rest = batcher.cut();
                let elapsed = started.elapsed();
                assert_eq!(
                    full.iter()
                        .chain(&rest)
                        .map(|b| b.events.len())
                        .sum::<usize>(),
                    records
                );
                elapsed
            }),
        ),
        (
            "events → NDJSON input (JSON check included)",
            best(&mut || {
                let started = Instant::now();
                let encoded = encode_batch(&events, InputMode::Value);
                let elapsed = started.elapsed();
                assert_eq!(encoded.records, records);
                elapsed
            }),
        ),
        (
            "NDJSON output → Arrow, 10 declared columns",
            best(&mut || {
                let started = Instant::now();
                let batch = decode_rows(&schema, &ndjson.bytes, records).unwrap();
                let elapsed = started.elapsed();
                assert_eq!(batch.num_rows(), records);
                elapsed
            }),
        ),
    ];
    println!(
        "{records} records of {:.0} bytes from {PARTITIONS} partitions (an `Event` is {} bytes), best of {rounds}\n",
        ndjson.bytes.len() as f64 / records as f64,
        std::mem::size_of::<Event>()
    );
    println!("| step | per batch | ns/event |");
    println!("|---|---|---|");
    for (step, time) in rows {
        println!(
            "| {step} | {:.2} ms | {:.0} |",
            time.as_secs_f64() * 1000.0,
            time.as_nanos() as f64 / records as f64
        );
    }
}
