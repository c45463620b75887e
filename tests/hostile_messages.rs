//! The hostile-message corpus: malformed input of every kind (not UTF-8, invalid JSON,
//! NUL bytes, huge lines, deep nesting, wrong types, numbers and timestamps out of range,
//! partition values too long for a file name, ragged CSV, truncated gzip and zstd, empty
//! objects, …) run through the real `sluice run`, over a local bucket and over the real
//! Kafka-protocol broker. Every input record must end up either in the output or in the
//! dead letters, exactly once, the run must not block, and no secret given to the job may
//! appear in anything it logs.
//!
//! The function (tests/hostile/hostile.py) passes each JSON object's fields on unchanged
//! with the record's origin (`src`, `pos`), so the output schema sees the hostile values.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::*;

/// A value shaped like an AWS secret key, given to the job through `${…}`.
const FAKE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYHOSTILEKEY";

const SCHEMA: &str = r#"{ src = "utf8 not null", pos = "int64 not null", n = "int64", ts = "timestamp_ms", tag = "utf8", text = "utf8" }"#;

/// The hostile function's job (`tests/hostile/hostile.py` on envelopes, one attempt, the
/// fake secret in its environment, output partitioned by tag) without a trigger or an
/// output URL.
fn hostile_job(name: &str) -> JobToml {
    JobToml::new(name)
        .set("function", "command", ["python3", "hostile.py"])
        .set("function", "mode", "stream")
        .set("function", "input", "envelope")
        .set("function", "max_attempts", 1_i64)
        .set("function", "retry_backoff", "10ms")
        .set(
            "function",
            "env",
            raw(r#"{ API_SECRET = "${HOSTILE_FAKE_SECRET}" }"#),
        )
        .set("batch", "max_wait", "200ms")
        .set("output", "partition_by", ["tag"])
        .schema(SCHEMA)
}

/// What a record became: `(src, pos)` → a row or a dead letter (with its error).
#[derive(Debug, Default)]
struct Accounting {
    rows: BTreeMap<(String, i64), usize>,
    letters: BTreeMap<(String, i64), Vec<String>>,
}

impl Accounting {
    fn add_parquet(&mut self, bytes: bytes::Bytes) {
        for batch in record_batches(bytes) {
            let src = batch.column_by_name("src").unwrap().as_string::<i32>();
            let pos = batch
                .column_by_name("pos")
                .unwrap()
                .as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                *self
                    .rows
                    .entry((src.value(i).to_owned(), pos.value(i)))
                    .or_default() += 1;
            }
        }
    }

    fn add_letter(&mut self, letter: &serde_json::Value) {
        let origin = &letter["origin"];
        let id = match origin.get("key") {
            Some(key) => (
                key.as_str().unwrap().to_owned(),
                origin["line"].as_i64().unwrap(),
            ),
            None => (
                origin["topic"].as_str().unwrap().to_owned(),
                origin["offset"].as_i64().unwrap(),
            ),
        };
        let error = letter["error"].as_str().unwrap_or_default().to_owned();
        self.letters.entry(id).or_default().push(error);
    }

    /// Every expected record once, in the rows or the letters, never both; nothing else.
    fn assert_complete(&self, expected: &BTreeSet<(String, i64)>) {
        for (id, n) in &self.rows {
            assert_eq!(*n, 1, "{id:?} has {n} rows");
            assert!(
                !self.letters.contains_key(id),
                "{id:?} is both in the output and a dead letter: {:?}",
                self.letters[id]
            );
        }
        for (id, errors) in &self.letters {
            assert_eq!(
                errors.len(),
                1,
                "{id:?} was dead-lettered twice: {errors:?}"
            );
        }
        let seen: BTreeSet<(String, i64)> = self
            .rows
            .keys()
            .chain(self.letters.keys())
            .cloned()
            .collect();
        let missing: Vec<_> = expected.difference(&seen).collect();
        let extra: Vec<_> = seen.difference(expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "records neither in the output nor in the dead letters: {missing:?}; unexpected: {extra:?}"
        );
    }

    fn row(&self, src: &str, pos: i64) -> bool {
        self.rows.contains_key(&(src.to_owned(), pos))
    }

    fn letter(&self, src: &str, pos: i64) -> Option<&str> {
        self.letters
            .get(&(src.to_owned(), pos))
            .map(|errors| errors[0].as_str())
    }
}

/// The hostile lines of `mixed.ndjson`, 1-based line → (bytes, whether it must be a row).
/// `None` means the line is not a record (blank); `Some(None)` either outcome is fine.
fn mixed_lines() -> Vec<(Vec<u8>, Option<Option<bool>>)> {
    let deep = format!(
        "{{\"n\":7,\"deep\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let huge = format!("{{\"n\":6,\"text\":\"{}\"}}", "x".repeat(3 << 20));
    let long_tag = format!("{{\"n\":12,\"tag\":\"{}\"}}", "é/".repeat(150));
    let row = Some(Some(true));
    let letter = Some(Some(false));
    vec![
        (br#"{"n":1,"tag":"a"}"#.to_vec(), row),
        (b"\xff\xfe{\"n\":2}".to_vec(), letter),
        (br#"{"n":3,"#.to_vec(), letter),
        (b"{\"n\":4}\x00".to_vec(), letter),
        (br#"{"n":5,"text":"a\u0000b"}"#.to_vec(), row),
        (huge.into_bytes(), row),
        (deep.into_bytes(), Some(None)),
        (br#"{"n":"9"}"#.to_vec(), letter),
        (br#"{"n":9223372036854775808}"#.to_vec(), letter),
        (br#"{"n":-9223372036854775809}"#.to_vec(), letter),
        (br#"{"ts":9223372036854775807}"#.to_vec(), letter),
        (long_tag.into_bytes(), row),
        (br#"{"n":13,"tag":5}"#.to_vec(), letter),
        (Vec::new(), None),
        (b"   \t".to_vec(), None),
        (b"[1,2]".to_vec(), letter),
        (br#""just a string""#.to_vec(), letter),
        (br#"{"n":1e400}"#.to_vec(), letter),
        (br#"{"ts":"-000001-01-01T00:00:00Z"}"#.to_vec(), letter),
        (br#"{"n":20,"ts":"2026-12-06T10:00:00Z"}"#.to_vec(), row),
    ]
}

/// `count` good NDJSON lines (with text that does not compress away, so the stream has
/// many blocks), then cut in the middle once compressed.
fn truncated(count: usize, compress: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let text: String = (1..=count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!(
                "{{\"n\":{i},\"text\":\"{state:016x}{:016x}\"}}\n",
                state.rotate_left(29)
            )
        })
        .collect();
    let whole = compress(text.as_bytes());
    whole[..whole.len() / 2].to_vec()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn files_under(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

fn assert_no_secret(logs: &str) {
    assert!(
        !logs.contains(FAKE_SECRET),
        "the secret appears in the logs:\n{logs}"
    );
}

#[test]
fn bucket_corpus_every_record_is_in_the_output_or_the_dead_letters() {
    let root = tempfile::tempdir().unwrap();
    let inbox = root.path().join("inbox");
    let lake = root.path().join("lake");
    std::fs::create_dir_all(inbox.join("_hidden")).unwrap();
    let mut expected: BTreeSet<(String, i64)> = BTreeSet::new();
    let mut expect = |key: &str, lines: &[i64]| {
        for line in lines {
            expected.insert((key.to_owned(), *line));
        }
    };

    let mixed = mixed_lines();
    let mut body = Vec::new();
    for (line, (bytes, _)) in mixed.iter().enumerate() {
        body.extend_from_slice(bytes);
        body.push(b'\n');
        if mixed[line].1.is_some() {
            expect("mixed.ndjson", &[line as i64 + 1]);
        }
    }
    std::fs::write(inbox.join("mixed.ndjson"), body).unwrap();

    // CSV: ragged rows (short, long), a field that is not UTF-8, between good rows.
    std::fs::write(
        inbox.join("rows.csv"),
        b"n,tag\n1,a\n2\n3,b,c\n4,\xff\n5,e\n".as_slice(),
    )
    .unwrap();
    expect("rows.csv", &[2, 3, 4, 5, 6]);
    std::fs::write(inbox.join("badheader.csv"), b"n,\xff\n1,a\n".as_slice()).unwrap();
    expect("badheader.csv", &[1, 2]);
    std::fs::write(inbox.join("broken.json"), br#"[{"n":1},{"n":2}, oops]"#).unwrap();
    expect("broken.json", &[1, 2, 3]);
    std::fs::write(inbox.join("empty.ndjson"), b"").unwrap();
    std::fs::write(inbox.join("cut.ndjson.gz"), truncated(20_000, gzip)).unwrap();
    std::fs::write(
        inbox.join("cut.ndjson.zst"),
        truncated(20_000, |b| zstd::stream::encode_all(b, 1).unwrap()),
    )
    .unwrap();
    // Skipped like listing skips them: not records.
    std::fs::write(inbox.join("_hidden/skip.ndjson"), b"{\"n\":1}\n").unwrap();
    std::fs::write(inbox.join(".dot.ndjson"), b"{\"n\":1}\n").unwrap();

    let job = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("tests/hostile/hostile.py"),
        job.path().join("hostile.py"),
    )
    .unwrap();
    hostile_job(&unique("hostile").to_lowercase())
        .bucket(&format!("file://{}", inbox.display()))
        .output(&format!("file://{}", lake.display()))
        .set("output", "max_file_age", "1s")
        .write_in(job.path());

    let mut sluice = Sluice::spawn(
        &env(),
        &["run", "--once", job.path().to_str().unwrap()],
        &[("HOSTILE_FAKE_SECRET", FAKE_SECRET)],
        job.path().join("sluice.log"),
    );
    // Bounded: a blocked job (e.g. an upload retried forever) fails the test.
    let status = sluice.wait(Duration::from_secs(240));
    let logs = sluice.logs();
    assert!(status.success(), "{logs}");
    assert_no_secret(&logs);

    let mut files = Vec::new();
    files_under(&lake, &mut files);
    let mut seen = Accounting::default();
    let dead = lake.join("_sluice/dead_letters");
    for file in &files {
        if file.starts_with(&dead) {
            let text = std::fs::read_to_string(file).unwrap();
            assert_no_secret(&text);
            for line in text.lines() {
                seen.add_letter(&serde_json::from_str(line).unwrap());
            }
        } else if file.extension().is_some_and(|e| e == "parquet") {
            // Every folder name is a valid file name (the long tag was shortened).
            for part in file.strip_prefix(&lake).unwrap().components() {
                assert!(part.as_os_str().len() <= 255, "{}", file.display());
            }
            seen.add_parquet(bytes::Bytes::from(std::fs::read(file).unwrap()));
        }
    }

    // The truncated objects: every line before the damage is a row, the damage is one
    // dead letter right after them.
    for key in ["cut.ndjson.gz", "cut.ndjson.zst"] {
        let lines: Vec<i64> = seen
            .rows
            .keys()
            .chain(seen.letters.keys())
            .filter(|(src, _)| src == key)
            .map(|(_, pos)| *pos)
            .collect();
        let damage = *lines
            .iter()
            .max()
            .unwrap_or_else(|| panic!("{key}: nothing"));
        assert!(damage > 100, "{key}: only {damage} lines before the damage");
        let error = seen.letter(key, damage).unwrap_or_else(|| panic!("{key}"));
        assert!(error.contains("damaged"), "{key}: {error}");
        expect(key, &(1..=damage).collect::<Vec<_>>());
        for line in 1..damage {
            assert!(
                seen.row(key, line),
                "{key} line {line} is not in the output"
            );
        }
    }
    seen.assert_complete(&expected);

    for (line, (_, outcome)) in mixed.iter().enumerate() {
        let line = line as i64 + 1;
        match outcome {
            Some(Some(true)) => assert!(seen.row("mixed.ndjson", line), "line {line}"),
            Some(Some(false)) => assert!(
                seen.letter("mixed.ndjson", line).is_some(),
                "line {line} should be a dead letter"
            ),
            _ => {}
        }
    }
    // Out-of-range values name the column; ragged rows and bad headers say why.
    let error = seen.letter("mixed.ndjson", 10).unwrap();
    assert!(
        error.contains("\"n\"") && error.contains("64 bits"),
        "{error}"
    );
    let error = seen.letter("mixed.ndjson", 11).unwrap();
    assert!(
        error.contains("\"ts\"") && error.contains("9999"),
        "{error}"
    );
    let error = seen.letter("rows.csv", 3).unwrap();
    assert!(
        error.contains("row has 1 fields but the header has 2"),
        "{error}"
    );
    let error = seen.letter("badheader.csv", 2).unwrap();
    assert!(error.contains("header"), "{error}");
    for (pos, expected_row) in [(2, true), (3, false), (4, false), (5, false), (6, true)] {
        assert_eq!(
            seen.row("rows.csv", pos),
            expected_row,
            "rows.csv line {pos}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_corpus_every_record_is_in_the_output_or_the_dead_letters() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let env = env();
    let topic = unique("hostile");
    create_topic(&env, &topic, 1).await;
    // The same hostile values as message payloads (the huge one under the broker's
    // message size limit), plus an empty payload and payloads only Kafka carries.
    let mut payloads: Vec<Vec<u8>> = mixed_lines()
        .into_iter()
        .map(|(bytes, _)| {
            if bytes.len() > 1 << 20 {
                format!("{{\"n\":6,\"text\":\"{}\"}}", "x".repeat(900_000)).into_bytes()
            } else {
                bytes
            }
        })
        .collect();
    payloads.push(b"\x00\x00\x00\x00".to_vec());
    payloads.push(b"{\"n\":1}\n{\"n\":2}".to_vec());
    payloads.push(b"{\n  \"n\": 3,\n  \"tag\": \"pretty\"\n}".to_vec());
    payloads.push(br#"{"n":22,"n":23}"#.to_vec());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    for payload in &payloads {
        producer
            .send(
                FutureRecord::<(), [u8]>::to(&topic).payload(payload.as_slice()),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }

    let job = JobDir::new(&env, &topic, |job| job.set("function", "command", ["true"]));
    std::fs::copy(
        repo_root().join("tests/hostile/hostile.py"),
        job.path().join("hostile.py"),
    )
    .unwrap();
    hostile_job(&job.name)
        .kafka(&env.brokers, &topic)
        .set("trigger.kafka", "start", "earliest")
        .set("trigger.kafka.options", "\"session.timeout.ms\"", "6000")
        .output(&format!("s3://{}/{}", env.bucket, job.prefix))
        .set("output", "max_file_age", "500ms")
        .set("output.options", "endpoint", &env.s3_endpoint)
        .set("output.options", "access_key_id", &env.access_key)
        .set(
            "output.options",
            "secret_access_key",
            "${AWS_SECRET_ACCESS_KEY}",
        )
        .write_in(job.path());
    let mut sluice = Sluice::spawn(
        &env,
        &["run", job.path().to_str().unwrap()],
        &[("HOSTILE_FAKE_SECRET", FAKE_SECRET)],
        job.path().join("sluice.log"),
    );
    let ends = BTreeMap::from([(0, payloads.len() as i64)]);
    wait_committed(&env, &job, &mut sluice, &ends, Duration::from_secs(180)).await;
    sluice.terminate();
    let status = sluice.wait(Duration::from_secs(60));
    let logs = sluice.logs();
    assert!(status.success(), "{logs}");
    assert_no_secret(&logs);
    assert!(
        !logs.contains(&env.secret_key),
        "the store secret leaked:\n{logs}"
    );
    assert!(
        !logs.contains("ENAMETOOLONG") && !logs.contains("retrying"),
        "{logs}"
    );

    let mut seen = Accounting::default();
    for (key, bytes) in parquet_objects(&env, &job.prefix).await {
        for segment in key.split('/') {
            assert!(segment.len() <= 255, "{key}");
        }
        seen.add_parquet(bytes);
    }
    for letter in read_dead_letters(&env, &job.prefix).await {
        assert_no_secret(&letter.to_string());
        seen.add_letter(&letter);
    }
    let expected: BTreeSet<(String, i64)> = (0..payloads.len() as i64)
        .map(|offset| (topic.clone(), offset))
        .collect();
    seen.assert_complete(&expected);
    // The values a schema must refuse are dead letters, the good ones rows.
    for (offset, (_, outcome)) in mixed_lines().iter().enumerate() {
        match outcome {
            Some(Some(true)) => assert!(seen.row(&topic, offset as i64), "offset {offset}"),
            Some(Some(false)) => assert!(
                seen.letter(&topic, offset as i64).is_some(),
                "offset {offset} should be a dead letter"
            ),
            _ => {}
        }
    }
}
