//! A property test over `job.toml` validation: thousands of generated and mutated specs,
//! in bounded time. For every input, validation returns (never panics), an error list is
//! never empty, every message is short, and no message shows a secret.
//!
//! Deterministic: a fixed seed, so a failure reproduces; `SLUICE_FUZZ_SEED` and
//! `SLUICE_FUZZ_CASES` run other or more cases (e.g. for a longer run in CI).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::*;

const SECRET: &str = "fuzz-secret-5e1b9c0d7a";

/// Cases per run by default, and the time after which a run stops early.
const DEFAULT_CASES: usize = 4000;
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SEEDS: &[&str] = &[
    MINIMAL,
    r#"name = "orders"
[trigger.amqp]
url = "amqp://app:${AMQP_SECRET}@127.0.0.1:5672/%2f?heartbeat=10"
queue = "orders"
declare = true
exchange = "events"
routing_keys = ["order.#"]
prefetch = 500
[function]
command = ["python3", "transform.py"]
mode = "stream"
timeout = "10s"
memory = "256MiB"
[function.env]
DB_PASSWORD = "${DB_SECRET}"
[batch]
max_records = 500
max_bytes = "4MiB"
max_wait = "1s"
[scaling]
min_instances = 0
max_instances = 4
ordering = "key"
[output]
url = "s3://lake/orders"
partition_by = ["day"]
schema = { id = "int64 not null", day = "date32", total = "float64", note = "utf8" }
[output.options]
secret_access_key = "${AWS_SECRET_ACCESS_KEY}"
region = "eu-west-1"
[dead_letter.amqp]
queue = "orders-dead"
"#,
    r#"name = "files"
[trigger.bucket]
url = "s3://landing/in"
mode = "notifications"
listen = "127.0.0.1:9400"
events = ["ObjectCreated:"]
suffix = ".csv"
format = "csv"
compression = "gzip"
[trigger.bucket.options]
session_token = "${SESSION_TOKEN}"
[function]
command = ["cat"]
[output]
url = "lake"
schema = { id = "int64", ts = "timestamp_ms" }
[dead_letter.kafka]
brokers = "${KAFKA_BROKERS}"
topic = "files-dead"
"#,
];

/// Pieces a mutation inserts: TOML syntax, hostile values, known keys and tables.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    ".",
    "\n",
    "#",
    "\\",
    "\\u0000",
    "${",
    "}",
    "$",
    "$$",
    "${AWS_SECRET_ACCESS_KEY}",
    "${UNSET}",
    "${1X}",
    "99999999999999999999",
    "-9223372036854775809",
    "-1",
    "0",
    "1e308",
    "nan",
    "inf",
    "true",
    "1979-05-27T07:32:00Z",
    "\"99999999999999EiB\"",
    "\"0s\"",
    "\"1h\"",
    "\"string\"",
    "\"binary\"",
    "\"float64\"",
    "\"int128\"",
    "not null",
    "s3://a:b@c/d",
    "amqp://u:p@h/%2f?heartbeat=x",
    "name",
    "memory",
    "partition_by",
    "schema",
    "group",
    "options",
    "[trigger.kafka]",
    "[trigger.amqp]",
    "[trigger.bucket]",
    "[function]",
    "[output]",
    "[dead_letter]",
    "[dead_letter.kafka]",
    "[function.env]",
    "[batch]",
    "[scaling]",
    "[output.options]",
    "é",
    "\u{202e}",
    "\u{fffd}",
];

fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "AWS_SECRET_ACCESS_KEY" | "AMQP_SECRET" | "DB_SECRET" | "SESSION_TOKEN" => {
            Some(SECRET.into())
        }
        "KAFKA_BROKERS" => Some("127.0.0.1:9092".into()),
        _ => None,
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..=rng.below(6) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if !bytes.is_empty() => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 if !bytes.is_empty() => {
                let index = rng.below(bytes.len());
                bytes[index] = u8::try_from(rng.next() & 0xff).unwrap_or(b'?');
            }
            2 => {
                // Repeat a line: duplicate keys and tables.
                let lines: Vec<&str> = text.lines().collect();
                let line = lines[rng.below(lines.len())];
                bytes.splice(at..at, format!("\n{line}\n").into_bytes());
            }
            3 => {
                let huge = "x".repeat(1 + rng.below(100_000));
                bytes.splice(at..at, huge.into_bytes());
            }
            _ => {
                let token = rng.pick(TOKENS);
                bytes.splice(at..at, token.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A spec assembled from random lines: each a known or stray key with a random value.
fn generate(rng: &mut Rng) -> String {
    const TABLES: &[&str] = &[
        "",
        "[trigger.kafka]",
        "[trigger.amqp]",
        "[trigger.bucket]",
        "[function]",
        "[batch]",
        "[scaling]",
        "[output]",
        "[output.options]",
        "[dead_letter]",
        "[dead_letter.kafka]",
        "[dead_letter.amqp]",
        "[function.env]",
        "[trigger.kafka.options]",
    ];
    const KEYS: &[&str] = &[
        "name",
        "brokers",
        "topic",
        "group",
        "start",
        "url",
        "queue",
        "declare",
        "prefetch",
        "mode",
        "listen",
        "format",
        "command",
        "timeout",
        "memory",
        "open_files",
        "cpu_time",
        "max_output",
        "preload",
        "max_records",
        "max_bytes",
        "max_wait",
        "max_idle",
        "min_instances",
        "max_instances",
        "ordering",
        "schema",
        "partition_by",
        "compression",
        "secret_access_key",
        "\"enable.auto.commit\"",
        "bogus",
    ];
    const VALUES: &[&str] = &[
        "\"clicks\"",
        "\"127.0.0.1:9092\"",
        "\"${KAFKA_BROKERS}\"",
        "\"${AWS_SECRET_ACCESS_KEY}\"",
        "[\"cat\"]",
        "[\"python3\", \"f.py\"]",
        "[]",
        "\"30s\"",
        "\"512MiB\"",
        "5",
        "-5",
        "99999999999999999999",
        "true",
        "{ id = \"int64\" }",
        "{ id = \"float64\" }",
        "[\"id\"]",
        "\"s3://k:s@b/p\"",
        "\"amqp://guest:guest@h/%2f?channel_max=99999\"",
        "\"a\\u0000b\"",
        "1.5",
        "\"\"",
        "{}",
    ];
    let mut text = String::new();
    for _ in 0..rng.below(24) {
        if rng.below(4) == 0 {
            text.push_str(rng.pick(TABLES));
        } else {
            text.push_str(&format!("{} = {}", rng.pick(KEYS), rng.pick(VALUES)));
        }
        text.push('\n');
    }
    text
}

/// Every broken property of one answer.
fn check(text: &str) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        parse_job(
            text,
            Path::new(FILE),
            Path::new("/nonexistent/fuzz"),
            &fuzz_env,
        )
    }));
    let errors = match outcome {
        Err(_) => return Err("validation panicked".into()),
        Ok(Ok(job)) => {
            let shown = format!("{job:?}");
            return match shown.contains(SECRET) {
                true => Err("the spec's Debug shows a secret".into()),
                false => Ok(()),
            };
        }
        Ok(Err(errors)) => errors,
    };
    if errors.0.is_empty() {
        return Err("an empty error list".into());
    }
    for error in &errors {
        if error.message.len() > 4096 || error.field.len() > 1024 {
            return Err(format!("a {} byte message", error.message.len()));
        }
        if error.to_string().contains(SECRET) {
            return Err(format!("a message shows the secret: {error}"));
        }
    }
    Ok(())
}

#[test]
fn validation_never_panics_nor_leaks_on_generated_and_mutated_specs() {
    let seed = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5EED_0F51_00CE);
    let cases = std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut ran = 0;
    let mut rejected = 0;
    while ran < cases && started.elapsed() < TIME_LIMIT {
        let text = match rng.below(3) {
            0 => generate(&mut rng),
            _ => {
                let seed_spec = SEEDS[rng.below(SEEDS.len())];
                mutate(&mut rng, seed_spec)
            }
        };
        if let Err(problem) = check(&text) {
            let shown: String = text.chars().take(2000).collect();
            panic!("case {ran} (seed {seed}): {problem}; input:\n{shown}");
        }
        if parse_job(
            &text,
            Path::new(FILE),
            Path::new("/nonexistent/fuzz"),
            &fuzz_env,
        )
        .is_err()
        {
            rejected += 1;
        }
        ran += 1;
    }
    assert!(ran >= 100, "only {ran} cases ran in {TIME_LIMIT:?}");
    assert!(
        rejected > 0 && rejected < ran,
        "{rejected} of {ran} rejected: the generators must reach both outcomes"
    );
}
