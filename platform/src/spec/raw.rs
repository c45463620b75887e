//! `job.toml` as written: serde structs that mirror the file, field for field.
//!
//! Nothing here is validated beyond TOML types; [`super::validate`] turns a [`RawJob`] into a
//! [`super::JobSpec`]. Fields a user may omit are `Option`s (or default to empty) so that a
//! missing required field is reported together with every other problem instead of
//! stopping at the first one. Unknown fields are rejected everywhere, so a typo never passes
//! silently.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A whole `job.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// Job name (required): lowercase letters, digits, `_` and `-`, starting with a letter
    /// or digit, at most 63 characters. It names the consumer group by default and appears
    /// in logs and metrics.
    pub name: Option<String>,
    /// Where the job's messages come from: exactly one of `[trigger.kafka]`,
    /// `[trigger.amqp]`, `[trigger.bucket]`.
    pub trigger: Option<RawTrigger>,
    /// The program that transforms each batch (`[function]`, required).
    pub function: Option<RawFunction>,
    /// When a batch is cut (`[batch]`, optional).
    #[serde(default)]
    pub batch: RawBatch,
    /// How many function instances may run (`[scaling]`, optional).
    #[serde(default)]
    pub scaling: RawScaling,
    /// Where and how the Parquet output is written (`[output]`, required).
    pub output: Option<RawOutput>,
    /// Where records that cannot be processed go (`[dead_letter]`, optional).
    pub dead_letter: Option<RawDeadLetter>,
}

/// `[trigger]`: one table per trigger kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// `[trigger.kafka]`: consume a Kafka topic with a consumer group.
    pub kafka: Option<RawKafkaTrigger>,
    /// `[trigger.amqp]`: consume an AMQP 0-9-1 (RabbitMQ) queue.
    pub amqp: Option<RawAmqpTrigger>,
    /// `[trigger.bucket]`: process the objects that appear under a store prefix.
    pub bucket: Option<RawBucketTrigger>,
}

/// `[trigger.bucket]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucketTrigger {
    /// Where input objects appear (required): `s3://bucket/prefix`, `file:///abs/path`, or a
    /// folder path relative to the job folder (`"inbox"`). `${NAME}` is expanded.
    pub url: Option<String>,
    /// How objects are found: `"listing"` (default: poll the prefix, with a durable cursor
    /// beside the output) or `"notifications"` (S3 event notifications POSTed to `listen`,
    /// or published on the queue of `[trigger.bucket.amqp]` or the topic of
    /// `[trigger.bucket.kafka]`).
    pub mode: Option<String>,
    /// Notifications: the address the HTTP endpoint listens on (default `127.0.0.1:9400`);
    /// not with `[trigger.bucket.amqp]` or `[trigger.bucket.kafka]`.
    pub listen: Option<String>,
    /// Notifications: the shared token the HTTP endpoint requires, as a `${NAME}`
    /// reference (`Authorization: Bearer <token>`, or `?token=<token>` in the endpoint
    /// URL); default none: any request is accepted.
    pub token: Option<String>,
    /// Notifications: read them from an AMQP queue instead of the HTTP endpoint; the same
    /// fields as `[trigger.amqp]`.
    pub amqp: Option<RawAmqpTrigger>,
    /// Notifications: read them from a Kafka topic instead of the HTTP endpoint; the same
    /// fields as `[trigger.kafka]` (the group defaults to `sluice-<name>`).
    pub kafka: Option<RawKafkaTrigger>,
    /// Notifications: event-name prefixes to process (default `["ObjectCreated:"]`).
    pub events: Option<Vec<String>>,
    /// Notifications: only keys starting with this.
    pub prefix: Option<String>,
    /// Notifications: only keys ending with this.
    pub suffix: Option<String>,
    /// How an object becomes records: `"auto"` (default: `.csv` → csv, `.json` → json,
    /// otherwise lines), `"lines"` (NDJSON or text), `"csv"` (header row), `"json"` (an
    /// array or one object), `"raw"` (one record: the bytes).
    pub format: Option<String>,
    /// `"auto"` (default: by `.gz` / `.zst` suffix), `"none"`, `"gzip"`, `"zstd"`.
    pub compression: Option<String>,
    /// How often the prefix is listed for new objects (default 1s).
    pub poll_interval: Option<RawDuration>,
    /// Notifications: how long a notified object may be missing before its notification
    /// is dead-lettered and leaves the spool (default 5m).
    pub missing_timeout: Option<RawDuration>,
    /// Object-store options for the input, like `[output.options]`.
    #[serde(default)]
    pub options: RawOptions,
}

/// `[trigger.kafka]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTrigger {
    /// Bootstrap servers, `host:port[,host:port…]`; `${NAME}` references are expanded from
    /// the environment.
    pub brokers: Option<String>,
    /// A named connection from `sluice.toml` (not supported yet; use `brokers`).
    pub connection: Option<String>,
    /// The topic to consume (required): letters, digits, `.`, `_` and `-`, at most 249
    /// characters.
    pub topic: Option<String>,
    /// Consumer group; default `sluice-<name>`. Jobs sharing a group share the work.
    pub group: Option<String>,
    /// Where a new consumer group begins: `"earliest"` (default) or `"latest"`.
    pub start: Option<String>,
    /// Extra librdkafka properties, e.g. `"security.protocol" = "SASL_SSL"`. Values are
    /// strings (numbers and booleans are accepted and written as text) with `${NAME}`
    /// expanded; a key naming a secret (`secret`, `password`, `token`) must be a `${NAME}`
    /// reference.
    #[serde(default)]
    pub options: RawOptions,
}

/// `[trigger.amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpTrigger {
    /// Broker address (required), `amqp://user:password@host:5672/vhost` (`%2f` for the
    /// vhost `/`); `${NAME}` references are expanded. A password must be a `${NAME}`
    /// reference (or the whole URL one); only RabbitMQ's default `guest:guest` may be
    /// written literally.
    pub url: Option<String>,
    /// The queue to consume (required), at most 255 bytes.
    pub queue: Option<String>,
    /// Declare the queue (durable) before consuming, and bind it to `exchange`; default
    /// false: the queue must exist.
    pub declare: Option<bool>,
    /// With `declare = true`: an existing exchange to bind the queue to.
    pub exchange: Option<String>,
    /// With `exchange`: one binding per routing key (default: one binding with `""`).
    pub routing_keys: Option<Vec<String>>,
    /// Most unacknowledged deliveries the broker sends at once, 1 to 65535 (default
    /// 10000); must cover what arrives within `output.max_file_age`.
    #[serde(default, deserialize_with = "saturating_integer")]
    pub prefetch: Option<i64>,
}

/// `[function]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunction {
    /// Program and arguments (required), e.g. `["python3", "transform.py"]`. A relative
    /// program path resolves against the job folder.
    pub command: Option<Vec<String>>,
    /// `"exec"` (default): one process per batch; `"stream"`: a long-lived process handles
    /// batch after batch.
    pub mode: Option<String>,
    /// Wire encoding of batches: `"ndjson"` (default) or `"arrow"` (Arrow IPC streams).
    pub encoding: Option<String>,
    /// With `encoding = "arrow"`: the input records' columns, declared like
    /// `output.schema` (default: inferred from each batch).
    pub input_schema: Option<RawSchema>,
    /// What each input line holds: `"value"` (default, the message value) or `"envelope"`
    /// (an object with the value and its metadata).
    pub input: Option<String>,
    /// Per-batch time limit, e.g. `"30s"` (default 30s, at most 1h).
    pub timeout: Option<RawDuration>,
    /// Memory limit per instance, e.g. `"512MiB"` (at least 16MiB; default unlimited):
    /// a cgroup memory limit where cgroups are usable, else an address-space limit.
    pub memory: Option<RawSize>,
    /// Open-file limit per instance (default 1024, 16 to 1048576).
    #[serde(default, deserialize_with = "saturating_integer")]
    pub open_files: Option<i64>,
    /// CPU-time limit per instance, e.g. `"10m"` (default unlimited).
    pub cpu_time: Option<RawDuration>,
    /// Most output a function may write for one batch (default 256MiB, at least 1KiB).
    pub max_output: Option<RawSize>,
    /// Most processes, threads included, an instance may run at once (default 256, 1 to
    /// 65536); enforced where cgroups are usable.
    #[serde(default, deserialize_with = "saturating_integer")]
    pub max_processes: Option<i64>,
    /// Whether the function may use the network (default false: a network namespace with
    /// only loopback, where the kernel allows).
    pub network: Option<bool>,
    /// Environment for the function (names `[A-Za-z_][A-Za-z0-9_]*`, not starting with
    /// `SLUICE_`); `${NAME}` references are expanded from the platform's environment.
    #[serde(default)]
    pub env: RawOptions,
    /// Attempts per batch, first try included (default 3, 1 to 100).
    #[serde(default, deserialize_with = "saturating_integer")]
    pub max_attempts: Option<i64>,
    /// Wait before the second attempt, doubled each attempt (default 1s).
    pub retry_backoff: Option<RawDuration>,
    /// Records older than this (by their timestamp, or their arrival when they have none)
    /// go to the dead-letter destination instead of the function (default: no limit).
    pub max_record_age: Option<RawDuration>,
    /// Python modules to import once in a parent interpreter that forks instances, e.g.
    /// `["pyarrow", "mymodule"]` (default none). Only for a command that runs a Python
    /// script, `["python3", "transform.py", ...]`.
    pub preload: Option<Vec<String>>,
    /// `"strict"` (default): the job does not start where the host refuses one of the
    /// function's protections; `"best_effort"`: it starts, and the missing protections are
    /// named in the log, `/status` and `sluice validate` (`docs/security.md`).
    pub isolation: Option<String>,
}

/// `[batch]`: a batch is cut at whichever limit comes first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    /// Most records per batch (default 1000, 1 to 1000000).
    #[serde(default, deserialize_with = "saturating_integer")]
    pub max_records: Option<i64>,
    /// Most bytes of message values per batch (default 8MiB, 1KiB to 1GiB).
    pub max_bytes: Option<RawSize>,
    /// Longest a batch waits for more records after its first one (default 2s, at most 15m).
    pub max_wait: Option<RawDuration>,
}

/// `[scaling]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaling {
    /// Instances kept running even when idle (default 0).
    #[serde(default, deserialize_with = "saturating_integer")]
    pub min_instances: Option<i64>,
    /// Most instances at once (default 1, 1 to 256, at least `min_instances`).
    #[serde(default, deserialize_with = "saturating_integer")]
    pub max_instances: Option<i64>,
    /// How long an idle instance above `min_instances` is kept (default 30s).
    pub idle_timeout: Option<RawDuration>,
    /// Which records may run concurrently: `"partition"` (default: one batch per
    /// partition or queue at a time), `"key"` (several batches per partition, records
    /// with the same key never concurrently), or `"none"`.
    pub ordering: Option<String>,
}

/// `[output]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Output prefix (required): `s3://bucket/prefix`, `file:///abs/path`, `memory://name`,
    /// or a folder path such as `"lake"` or `"./out"`, relative to the job folder.
    /// `${NAME}` references are expanded.
    pub url: Option<String>,
    /// Columns whose values name the folders (`col=value/`), e.g. `["event_date"]`
    /// (default none). Each must be a declared column; at least one column must remain
    /// outside the partition.
    pub partition_by: Option<Vec<String>>,
    /// Columns in order (required): `name = "type"` or `name = "type not null"`, types
    /// `bool`, `int32`, `int64`, `float32`, `float64`, `utf8`, `binary`, `date32`,
    /// `timestamp_ms`, `timestamp_us`.
    pub schema: Option<RawSchema>,
    /// Parquet compression: `"zstd"` (default), `"snappy"` or `"none"`.
    pub compression: Option<String>,
    /// A file is closed once it reaches this size (default 128MiB, at least 1KiB).
    pub max_file_size: Option<RawSize>,
    /// A file is closed at most this long after its first row (default 30s).
    pub max_file_age: Option<RawDuration>,
    /// Object-store options: `endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `allow_http`, …; `${NAME}` is expanded, and secrets must be `${NAME}` references.
    #[serde(default)]
    pub options: RawOptions,
}

/// `[dead_letter]`: at most one of `url`, `[dead_letter.kafka]`, `[dead_letter.amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadLetter {
    /// Dead letters as NDJSON objects under this store prefix, e.g.
    /// `s3://lake/_dead/clicks`; `${NAME}` is expanded.
    pub url: Option<String>,
    /// `[dead_letter.kafka]`: dead letters as messages of a Kafka topic.
    pub kafka: Option<RawKafkaDeadLetter>,
    /// `[dead_letter.amqp]`: dead letters as persistent messages in an AMQP queue.
    pub amqp: Option<RawAmqpDeadLetter>,
}

/// `[dead_letter.kafka]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaDeadLetter {
    /// Bootstrap servers, `host:port[,host:port…]`, expanded; default: the Kafka
    /// trigger's `brokers` (required when the trigger is not Kafka).
    pub brokers: Option<String>,
    /// The topic dead letters are produced to (required); it must exist.
    pub topic: Option<String>,
    /// The consumer group `sluice dlq replay` commits to once letters are replayed;
    /// default `sluice-<name>-dead-letters`.
    pub group: Option<String>,
    /// Extra librdkafka properties for the producer and the replay consumer, like
    /// `[trigger.kafka.options]`.
    #[serde(default)]
    pub options: RawOptions,
}

/// `[dead_letter.amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpDeadLetter {
    /// Broker address, like `[trigger.amqp]`'s `url`; default: the AMQP trigger's `url`
    /// (required when the trigger is not AMQP).
    pub url: Option<String>,
    /// The queue dead letters are published to (required).
    pub queue: Option<String>,
    /// Declare the queue (durable) before publishing; default true. `false`: the queue
    /// must exist.
    pub declare: Option<bool>,
}

/// A duration as written, e.g. `"30s"`; parsed during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"1m30s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(value.to_string()))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A size as written: an integer number of bytes or a string such as `"512MiB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\", \"10MB\" or an integer number of bytes")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_i128<E: de::Error>(self, value: i128) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(saturate(value)))
            }
            fn visit_u128<E: de::Error>(self, value: u128) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(value.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// An integer field: a number beyond `i64` becomes `i64::MAX` (or `MIN`), so validation
/// reports it against the field's own range like any other out-of-range value.
fn saturating_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct IntegerVisitor;
    impl Visitor<'_> for IntegerVisitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            Ok(i64::try_from(value).unwrap_or(i64::MAX))
        }
        fn visit_i128<E: de::Error>(self, value: i128) -> Result<i64, E> {
            Ok(saturate(value))
        }
        fn visit_u128<E: de::Error>(self, value: u128) -> Result<i64, E> {
            Ok(i64::try_from(value).unwrap_or(i64::MAX))
        }
    }
    deserializer.deserialize_any(IntegerVisitor).map(Some)
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// A string → string table, in file order. Numbers and booleans are accepted as text, and
/// nested tables are flattened into dotted keys, so `sasl.mechanism = "PLAIN"` (unquoted)
/// means the key `sasl.mechanism`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOptions(pub Vec<(String, String)>);

/// One value in an options table before flattening.
enum OptionNode {
    Leaf(String),
    Table(Vec<(String, OptionNode)>),
}

impl<'de> Deserialize<'de> for OptionNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = OptionNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OptionNode, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, OptionNode>()? {
                    entries.push((key, value));
                }
                Ok(OptionNode::Table(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

fn flatten_into<E: de::Error>(
    prefix: &str,
    entries: Vec<(String, OptionNode)>,
    out: &mut Vec<(String, String)>,
) -> Result<(), E> {
    for (key, node) in entries {
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match node {
            OptionNode::Leaf(value) => {
                if out.iter().any(|(existing, _)| *existing == key) {
                    return Err(E::custom(format!("option `{key}` is given twice")));
                }
                out.push((key, value));
            }
            OptionNode::Table(nested) => flatten_into(&key, nested, out)?,
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for RawOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OptionsVisitor;
        impl<'de> Visitor<'de> for OptionsVisitor {
            type Value = RawOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawOptions, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, OptionNode>()? {
                    entries.push((key, value));
                }
                let mut flat = Vec::new();
                flatten_into::<A::Error>("", entries, &mut flat)?;
                Ok(RawOptions(flat))
            }
        }
        deserializer.deserialize_map(OptionsVisitor)
    }
}

/// `[output] schema`: `(column, declaration)` pairs in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSchema(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawSchema {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SchemaVisitor;
        impl<'de> Visitor<'de> for SchemaVisitor {
            type Value = RawSchema;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table of column = \"type\", e.g. { id = \"int64\", ts = \"timestamp_ms\" }",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSchema, A::Error> {
                let mut columns = Vec::new();
                while let Some((name, declaration)) = map.next_entry::<String, String>()? {
                    columns.push((name, declaration));
                }
                Ok(RawSchema(columns))
            }
        }
        deserializer.deserialize_map(SchemaVisitor)
    }
}
