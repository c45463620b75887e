//! What building a batch's Arrow IPC input (`encoding = "arrow"`) costs the platform, per
//! batch of the comparison benchmark's events (10 columns, ~285 bytes each).
//!
//! ```sh
//! cargo run --profile perf --example arrow_input -- [RECORDS_PER_BATCH] [ROUNDS]
//! ```
//!
//! Prints, per batch (default 10,000 records, best of 20 rounds): encoding the events as
//! NDJSON (what every encoding pays), the Arrow conversion with the schema inferred from
//! the batch (`input_schema` not declared, the default), with the schema declared, and
//! arrow-json's own inference over the batch alone (what inference cost before the
//! platform read the schema off arrow-json's tokens).

#![allow(clippy::unwrap_used)]

#[path = "events.rs"]
mod events;

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_json::reader::infer_json_schema_from_seekable;
use bytes::Bytes;
use sluice_connectors::{Event, Origin};
use sluice_platform::function::encode_arrow::ndjson_to_arrow;
use sluice_platform::function::encode_batch;
use sluice_platform::spec::InputMode;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().map_or(10_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(20, |a| a.parse().unwrap());
    let batch: Vec<Event> = (0..records)
        .map(|i| {
            Event::from_payload(
                Bytes::from(events::event(i)),
                Origin::Sample { line: i as u64 + 1 },
            )
        })
        .collect();
    let ndjson = encode_batch(&batch, InputMode::Value);
    let declared = Arc::new(
        infer_json_schema_from_seekable(Cursor::new(&ndjson.bytes), None)
            .unwrap()
            .0,
    );
    let best = |run: &dyn Fn()| {
        (0..rounds)
            .map(|_| {
                let started = Instant::now();
                run();
                started.elapsed()
            })
            .min()
            .unwrap_or(Duration::ZERO)
    };
    let rows: [(&str, Duration); 4] = [
        (
            "events → NDJSON (every encoding)",
            best(&|| drop(encode_batch(&batch, InputMode::Value))),
        ),
        (
            "NDJSON → Arrow IPC, schema inferred",
            best(&|| drop(ndjson_to_arrow(&ndjson, None, InputMode::Value).unwrap())),
        ),
        (
            "NDJSON → Arrow IPC, schema declared",
            best(&|| drop(ndjson_to_arrow(&ndjson, Some(&declared), InputMode::Value).unwrap())),
        ),
        (
            "arrow-json's inference alone",
            best(&|| {
                drop(infer_json_schema_from_seekable(
                    Cursor::new(&ndjson.bytes),
                    None,
                ))
            }),
        ),
    ];
    println!(
        "{records} records of {:.0} bytes, best of {rounds}\n",
        ndjson.bytes.len() as f64 / records as f64
    );
    println!("| step | per batch | records/s |");
    println!("|---|---|---|");
    for (step, time) in rows {
        println!(
            "| {step} | {:.2} ms | {:.0}k |",
            time.as_secs_f64() * 1000.0,
            records as f64 / time.as_secs_f64() / 1000.0
        );
    }
}
