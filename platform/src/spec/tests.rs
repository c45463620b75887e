//! Tests for `job.toml` parsing and validation: a full spec, a minimal one with its
//! defaults, and one test per kind of mistake, each checking the field the error names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::output::schema::ColumnType;
use sluice_connectors::amqp::{AmqpDeadLetterConfig, AmqpSourceConfig};
use sluice_connectors::bucket::BucketDiscovery;
use sluice_connectors::bucket::feed::NotificationFeed;
use sluice_connectors::kafka::{KafkaDeadLetterConfig, KafkaStart};

const FILE: &str = "/jobs/clicks/job.toml";
const DIR: &str = "/jobs/clicks";

fn env(name: &str) -> Option<String> {
    match name {
        "KAFKA_BROKERS" => Some("kafka-1:9092,kafka-2:9092".into()),
        "SASL_PASSWORD" => Some("kafka-pass".into()),
        "S3_SECRET" => Some("s3-secret".into()),
        "S3_KEY_ID" => Some("AKIA123".into()),
        "LAKE" => Some("lake".into()),
        "API_TOKEN" => Some("tok".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<JobSpec, SpecErrors> {
    parse_job(text, Path::new(FILE), Path::new(DIR), &env)
}

fn errors(text: &str) -> SpecErrors {
    match parse(text) {
        Ok(job) => panic!("expected errors, got a valid job: {job:?}"),
        Err(errors) => errors,
    }
}

/// Asserts that parsing fails with an error naming `field`, and returns that error.
fn error_for(text: &str, field: &str) -> SpecError {
    let errors = errors(text);
    match errors.for_field(field) {
        Some(error) => error.clone(),
        None => panic!("no error for field {field:?}; got:\n{errors}"),
    }
}

const MINIMAL: &str = r#"
name = "clicks"
[trigger.kafka]
brokers = "localhost:9092"
topic = "clicks"
[function]
command = ["python3", "transform.py"]
[output]
url = "lake"
schema = { user_id = "int64" }
"#;

/// `MINIMAL` with `extra` appended (TOML tables may follow in any order).
fn minimal_with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}")
}

/// `MINIMAL` with one line replaced.
fn minimal_replacing(line: &str, replacement: &str) -> String {
    assert!(MINIMAL.contains(line), "MINIMAL has no line {line:?}");
    MINIMAL.replacen(line, replacement, 1)
}

#[test]
fn full_spec_with_every_field_parses() {
    let text = r#"
name = "clickstream_v2"

[trigger.kafka]
brokers = "${KAFKA_BROKERS}"
topic = "web.clicks-v2"
group = "analytics"
start = "latest"
[trigger.kafka.options]
"security.protocol" = "SASL_SSL"
sasl.mechanism = "PLAIN"
"sasl.password" = "${SASL_PASSWORD}"
"fetch.max.bytes" = 1048576

[function]
command = ["./transform", "--fast"]
mode = "stream"
encoding = "ndjson"
input = "envelope"
timeout = "1m30s"
memory = "512MiB"
open_files = 4096
cpu_time = "10m"
max_output = "64MiB"
max_processes = 32
network = true
max_attempts = 5
retry_backoff = "500ms"
[function.env]
LOG_LEVEL = "debug"
PRICE = "$$5"
API_TOKEN = "${API_TOKEN}"

[batch]
max_records = 10000
max_bytes = "16MiB"
max_wait = "5s"
max_idle = "750ms"

[scaling]
min_instances = 1
max_instances = 4
idle_timeout = "2m"

[output]
url = "s3://${LAKE}/clicks"
partition_by = ["event_date"]
schema = { user_id = "int64 not null", url = "utf8", ts = "timestamp_ms", event_date = "date32" }
compression = "snappy"
max_file_size = 10485760
max_file_age = "1m"
[output.options]
endpoint = "http://localhost:9000"
region = "us-east-1"
access_key_id = "${S3_KEY_ID}"
secret_access_key = "${S3_SECRET}"
allow_http = true

[dead_letter]
url = "s3://${LAKE}/_dead/clicks"
"#;
    let job = parse(text).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(job.name, "clickstream_v2");
    assert_eq!(job.dir, PathBuf::from(DIR));

    let Some(kafka) = job
        .trigger
        .config::<sluice_connectors::kafka::KafkaSourceConfig>()
    else {
        panic!("expected a kafka trigger")
    };
    assert_eq!(kafka.brokers, "kafka-1:9092,kafka-2:9092");
    assert_eq!(kafka.topic, "web.clicks-v2");
    assert_eq!(kafka.group, "analytics");
    assert_eq!(kafka.start, KafkaStart::Latest);
    assert_eq!(
        kafka.options.get("security.protocol").map(String::as_str),
        Some("SASL_SSL")
    );
    assert_eq!(
        kafka.options.get("sasl.mechanism").map(String::as_str),
        Some("PLAIN")
    );
    assert_eq!(
        kafka.options.get("sasl.password").map(String::as_str),
        Some("kafka-pass")
    );
    assert_eq!(
        kafka.options.get("fetch.max.bytes").map(String::as_str),
        Some("1048576")
    );
    assert_eq!(kafka.options.len(), 4);

    let function = &job.function;
    assert_eq!(function.command, vec!["./transform", "--fast"]);
    assert_eq!(function.mode, FunctionMode::Stream);
    assert_eq!(function.encoding, Encoding::Ndjson);
    assert_eq!(function.input, InputMode::Envelope);
    assert_eq!(function.timeout, Duration::from_secs(90));
    assert_eq!(function.memory, Some(512 << 20));
    assert_eq!(function.open_files, 4096);
    assert_eq!(function.cpu_time, Some(Duration::from_secs(600)));
    assert_eq!(function.max_output, 64 << 20);
    assert_eq!(function.max_processes, 32);
    assert!(function.network);
    assert_eq!(function.max_attempts, 5);
    assert_eq!(function.retry_backoff, Duration::from_millis(500));
    assert_eq!(
        function.env.get("LOG_LEVEL").map(String::as_str),
        Some("debug")
    );
    assert_eq!(function.env.get("PRICE").map(String::as_str), Some("$5"));
    assert_eq!(
        function.env.get("API_TOKEN").map(String::as_str),
        Some("tok")
    );

    assert_eq!(job.batch.max_records, 10_000);
    assert_eq!(job.batch.max_bytes, 16 << 20);
    assert_eq!(job.batch.max_wait, Duration::from_secs(5));
    assert_eq!(job.batch.max_idle, Duration::from_millis(750));

    assert_eq!(job.scaling.min_instances, 1);
    assert_eq!(job.scaling.max_instances, 4);
    assert_eq!(job.scaling.idle_timeout, Duration::from_secs(120));

    let output = &job.output;
    assert_eq!(output.url, "s3://lake/clicks");
    assert_eq!(output.partition_by, vec!["event_date"]);
    let columns: Vec<(&str, ColumnType, bool)> = output
        .schema
        .columns()
        .iter()
        .map(|column| (column.name.as_str(), column.ty, column.nullable))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("user_id", ColumnType::Int64, false),
            ("url", ColumnType::Utf8, true),
            ("ts", ColumnType::TimestampMs, true),
            ("event_date", ColumnType::Date32, true),
        ],
        "columns keep the order written in the file"
    );
    assert_eq!(output.compression, Compression::Snappy);
    assert_eq!(output.max_file_size, 10 << 20);
    assert_eq!(output.max_file_age, Duration::from_secs(60));
    assert_eq!(
        output.options.get("secret_access_key").map(String::as_str),
        Some("s3-secret")
    );
    assert_eq!(
        output.options.get("access_key_id").map(String::as_str),
        Some("AKIA123")
    );
    assert_eq!(
        output.options.get("allow_http").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        output.options.get("endpoint").map(String::as_str),
        Some("http://localhost:9000")
    );

    assert!(
        matches!(
            &job.dead_letter,
            Some(DeadLetterSpec::Store { url }) if url == "s3://lake/_dead/clicks"
        ),
        "{:?}",
        job.dead_letter
    );
}

#[test]
fn minimal_spec_gets_documented_defaults() {
    let job = parse(MINIMAL).unwrap_or_else(|errors| panic!("{errors}"));
    let Some(kafka) = job
        .trigger
        .config::<sluice_connectors::kafka::KafkaSourceConfig>()
    else {
        panic!("expected a kafka trigger")
    };
    assert_eq!(kafka.brokers, "localhost:9092");
    assert_eq!(kafka.group, "sluice-clicks");
    assert_eq!(kafka.start, KafkaStart::Earliest);
    assert!(kafka.options.is_empty());

    let function = &job.function;
    assert_eq!(function.mode, FunctionMode::Exec);
    assert_eq!(function.encoding, Encoding::Ndjson);
    assert_eq!(function.input, InputMode::Value);
    assert_eq!(function.timeout, Duration::from_secs(30));
    assert_eq!(function.memory, None);
    assert_eq!(function.open_files, 1024);
    assert_eq!(function.cpu_time, None);
    assert_eq!(function.max_output, 256 << 20);
    assert_eq!(function.max_processes, 256);
    assert!(!function.network, "no network unless the job asks for it");
    assert!(function.env.is_empty());
    assert_eq!(function.max_attempts, 3);
    assert_eq!(function.retry_backoff, Duration::from_secs(1));

    assert_eq!(job.batch.max_records, 1000);
    assert_eq!(job.batch.max_bytes, 8 << 20);
    assert_eq!(job.batch.max_wait, Duration::from_secs(2));
    assert_eq!(job.batch.max_idle, Duration::from_millis(200));

    assert_eq!(job.scaling.min_instances, 0);
    assert_eq!(job.scaling.max_instances, 1);
    assert_eq!(job.scaling.idle_timeout, Duration::from_secs(30));

    let output = &job.output;
    assert_eq!(
        output.url, "file:///jobs/clicks/lake",
        "a plain path is a folder in the job folder"
    );
    assert!(output.partition_by.is_empty());
    assert_eq!(output.compression, Compression::Zstd);
    assert_eq!(output.max_file_size, 128 << 20);
    assert_eq!(output.max_file_age, Duration::from_secs(30));
    assert!(output.options.is_empty());
    assert!(job.dead_letter.is_none(), "{:?}", job.dead_letter);
}

#[test]
fn output_paths_resolve_against_the_job_folder() {
    let url_of = |url: &str| {
        let text = minimal_replacing("url = \"lake\"", &format!("url = {url:?}"));
        parse(&text)
            .map(|job| job.output.url)
            .unwrap_or_else(|errors| panic!("{errors}"))
    };
    assert_eq!(url_of("./out"), "file:///jobs/clicks/out");
    assert_eq!(url_of("../shared/out"), "file:///jobs/shared/out");
    assert_eq!(url_of("/data/lake"), "file:///data/lake");
    assert_eq!(url_of("file:///data/lake"), "file:///data/lake");
    assert_eq!(url_of("memory://test"), "memory://test");
}

#[test]
fn load_job_reads_the_folder_and_names_a_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let errors = load_job(dir.path()).expect_err("no job.toml yet");
    let error = &errors.0[0];
    assert_eq!(error.file, dir.path().join("job.toml"));
    assert!(error.to_string().contains("job.toml: not found"), "{error}");

    std::fs::write(dir.path().join("job.toml"), MINIMAL).expect("write job.toml");
    std::fs::write(dir.path().join("transform.py"), "").expect("write the script");
    let job = load_job(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(job.dir, dir.path());
    assert_eq!(
        job.output.url,
        format!("file://{}/lake", dir.path().display())
    );
}

#[test]
fn every_validation_error_is_reported_at_once() {
    let text = r#"
name = "Bad Name"
[trigger.kafka]
brokers = "localhost"
topic = "no spaces allowed"
[function]
command = []
timeout = "0s"
[batch]
max_records = 0
[output]
url = "gs://lake/x"
schema = { id = "int128" }
"#;
    let errors = errors(text);
    let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
    for expected in [
        "name",
        "trigger.kafka.brokers",
        "trigger.kafka.topic",
        "function.command",
        "function.timeout",
        "batch.max_records",
        "output.url",
        "output.schema.id",
    ] {
        assert!(
            fields.contains(&expected),
            "missing {expected} in {fields:?}"
        );
    }
    let display = errors.to_string();
    assert_eq!(
        display.lines().count(),
        errors.0.len(),
        "one error per line"
    );
    assert!(
        display.lines().all(|line| line.starts_with(FILE)),
        "{display}"
    );
}

#[test]
fn display_is_file_field_message() {
    let error = error_for(
        &minimal_with("[batch]\nmax_wait = \"1h\""),
        "batch.max_wait",
    );
    assert_eq!(
        error.to_string(),
        format!("{FILE}: batch.max_wait: {}", error.message),
        "Display is <file>: <field>: <message>"
    );
    assert!(
        error.message.contains("to 15m"),
        "says what is allowed: {}",
        error.message
    );
}

// One test per mistake; each checks the exact field named and part of the message.

#[test]
fn toml_syntax_error_names_line_and_column() {
    let text = "name = \"clicks\"\n[trigger.kafka\nbrokers = \"x:1\"\n";
    let errors = errors(text);
    let error = &errors.0[0];
    assert_eq!(error.field, "");
    assert!(
        error.message.contains("invalid TOML at line 2, column"),
        "{}",
        error.message
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("{FILE}: invalid TOML at line 2")),
        "{error}"
    );
}

#[test]
fn unknown_field_is_named_with_its_table() {
    let error = error_for(&minimal_with("[batch]\nmax_recs = 10"), "batch.max_recs");
    assert!(
        error.message.contains("max_records"),
        "says what is allowed: {}",
        error.message
    );
}

#[test]
fn unknown_top_level_field_is_named() {
    error_for(&format!("owner = \"me\"\n{MINIMAL}"), "owner");
}

#[test]
fn wrong_type_names_field_and_position() {
    let error = error_for(
        &minimal_with("[batch]\nmax_records = \"many\""),
        "batch.max_records",
    );
    assert!(error.message.contains("line 13"), "{}", error.message);
}

#[test]
fn bad_name_is_rejected() {
    let error = error_for(
        &minimal_replacing("name = \"clicks\"", "name = \"Clicks!\""),
        "name",
    );
    assert!(error.message.contains("lowercase"), "{}", error.message);
    let long = format!("name = \"{}\"", "a".repeat(64));
    error_for(&minimal_replacing("name = \"clicks\"", &long), "name");
}

#[test]
fn missing_name_is_reported() {
    error_for(&minimal_replacing("name = \"clicks\"", ""), "name");
}

#[test]
fn missing_trigger_is_reported() {
    let text = minimal_replacing(
        "[trigger.kafka]\nbrokers = \"localhost:9092\"\ntopic = \"clicks\"\n",
        "",
    );
    let error = error_for(&text, "trigger");
    assert!(error.message.contains("exactly one"), "{}", error.message);
}

#[test]
fn two_triggers_are_rejected() {
    let error = error_for(&minimal_with("[trigger.amqp]\nqueue = \"q\""), "trigger");
    assert!(error.message.contains("kafka, amqp"), "{}", error.message);
}

#[test]
fn unknown_trigger_kind_is_rejected() {
    error_for(&minimal_with("[trigger.sqs]\nqueue = \"q\""), "trigger.sqs");
}

/// `[trigger]` and `[dead_letter]` are read through the connectors' registry, yet answer
/// as the serde structs they replaced: arrays are read by position, kinds in the
/// registry's order, and a short one says how many elements a struct has.
#[test]
fn trigger_and_dead_letter_arrays_are_read_by_position() {
    let kafka = "[trigger.kafka]\nbrokers = \"localhost:9092\"\ntopic = \"clicks\"\n";
    let error = error_for(
        &minimal_replacing(kafka, "[[trigger]]\n[[trigger]]\nbrokers = \"h:1\"\n"),
        "trigger",
    );
    assert!(
        error
            .message
            .starts_with("unknown field `brokers`, expected one of `url`, `queue`"),
        "{}",
        error.message
    );
    let error = error_for(&minimal_replacing(kafka, "trigger = [{}]\n"), "trigger");
    assert!(
        error
            .message
            .starts_with("invalid length 1, expected struct RawTrigger with 3 elements"),
        "{}",
        error.message
    );
    let text = minimal_replacing(
        "name = \"clicks\"",
        "name = \"clicks\"\ndead_letter = [\"x\"]",
    );
    let error = error_for(&text, "dead_letter");
    assert!(
        error
            .message
            .starts_with("invalid length 1, expected struct RawDeadLetter with 3 elements"),
        "{}",
        error.message
    );
}

mod amqp;
mod bucket;
mod dead_letter;
mod fuzz;
mod hostile;
mod invalid;

#[test]
fn arrow_encoding_with_an_input_schema_parses() {
    let text = minimal_with("").replace(
        "[function]\n",
        "[function]\nencoding = \"arrow\"\ninput_schema = { user = \"utf8\", ts = \"timestamp_ms not null\" }\n",
    );
    let function = parse(&text).unwrap().function;
    assert_eq!(function.encoding, Encoding::Arrow);
    let schema = function.input_schema.unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["user", "ts"]);
    assert!(!schema.field(1).is_nullable());
    let without = parse(&minimal_with("")).unwrap().function;
    assert_eq!(
        (without.encoding, without.input_schema),
        (Encoding::Ndjson, None)
    );
}
