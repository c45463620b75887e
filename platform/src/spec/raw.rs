//! `job.toml` as written: serde structs that mirror the file, field for field.
//!
//! Nothing here is validated beyond TOML types; [`super::validate`] turns a [`RawJob`] into a
//! [`super::JobSpec`]. Fields a user may omit are `Option`s (or default to empty) so that a
//! missing required field is reported together with every other problem instead of
//! stopping at the first one. Unknown fields are rejected everywhere, so a typo never passes
//! silently.
//!
//! The tables of triggers and of dead-letter brokers are their connectors' own
//! (`sluice_connectors::registry` lists them); `[trigger]` and `[dead_letter]` here only
//! hand each `<kind>` table to its connector's struct.

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sluice_connectors::config_check::raw::saturating_integer;
pub use sluice_connectors::config_check::raw::{RawDuration, RawOptions, RawSize};
use sluice_connectors::registry::{
    DeadLetterTable, TableKind, TriggerTable, dead_letter_broker_kinds,
    supported_dead_letter_brokers, supported_triggers, trigger_kinds,
};

/// A whole `job.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// Job name (required): lowercase letters, digits, `_` and `-`, starting with a letter
    /// or digit, at most 63 characters. It names the consumer group by default and appears
    /// in logs and metrics.
    pub name: Option<String>,
    /// Where the job's messages come from: exactly one `[trigger.<kind>]` table.
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

/// `[trigger]`: one table per trigger kind, in file order, each read by its connector's
/// table (see `sluice_connectors::registry`, the one list of kinds). A kind not listed
/// there is an unknown field, reported like any other.
#[derive(Debug, Default)]
pub struct RawTrigger(pub Vec<(&'static str, Box<dyn TriggerTable>)>);

impl<'de> Deserialize<'de> for RawTrigger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TriggerVisitor;
        impl<'de> Visitor<'de> for TriggerVisitor {
            type Value = RawTrigger;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawTrigger")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTrigger, A::Error> {
                let mut tables = Vec::new();
                while let Some(kind) = map.next_key_seed(KindSeed(trigger_kinds()))? {
                    let table = map.next_value_seed(TriggerSeed(kind))?;
                    tables.push((kind, table));
                }
                Ok(RawTrigger(tables))
            }
            /// Tables by position, kinds in the registry's order, as serde reads a struct
            /// from an array (`[[trigger]]`).
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTrigger, A::Error> {
                let kinds = trigger_kinds();
                let mut tables = Vec::new();
                for (index, kind) in kinds.iter().enumerate() {
                    let Some(table) = seq.next_element_seed(TriggerSeed(kind))? else {
                        return Err(too_short(index, "RawTrigger", kinds.len()));
                    };
                    tables.push((*kind, table));
                }
                Ok(RawTrigger(tables))
            }
        }
        deserializer.deserialize_struct("RawTrigger", trigger_kinds(), TriggerVisitor)
    }
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
    /// A batch that no record reached for this long is cut (default 200ms, at most 15m).
    pub max_idle: Option<RawDuration>,
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

/// `[dead_letter]`: at most one of `url` and the `[dead_letter.<kind>]` tables of
/// brokers that can keep dead letters (`sluice_connectors::registry`).
#[derive(Debug, Default)]
pub struct RawDeadLetter {
    /// Dead letters as NDJSON objects under this store prefix, e.g.
    /// `s3://lake/_dead/clicks`; `${NAME}` is expanded.
    pub url: Option<String>,
    /// `[dead_letter.<kind>]`: dead letters as messages of a broker, each table read by
    /// its connector, in file order.
    pub brokers: Vec<(&'static str, Box<dyn DeadLetterTable>)>,
}

/// The field of `[dead_letter]` that is not a broker's table.
const DEAD_LETTER_URL: &str = "url";

/// Every field of `[dead_letter]`: `url`, then the brokers' kinds.
fn dead_letter_fields() -> &'static [&'static str] {
    static FIELDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        std::iter::once(DEAD_LETTER_URL)
            .chain(dead_letter_broker_kinds().iter().copied())
            .collect()
    })
}

impl<'de> Deserialize<'de> for RawDeadLetter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeadLetterVisitor;
        impl<'de> Visitor<'de> for DeadLetterVisitor {
            type Value = RawDeadLetter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawDeadLetter")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDeadLetter, A::Error> {
                let mut raw = RawDeadLetter::default();
                while let Some(field) = map.next_key_seed(KindSeed(dead_letter_fields()))? {
                    if field == DEAD_LETTER_URL {
                        raw.url = map.next_value::<Option<String>>()?;
                    } else {
                        let table = map.next_value_seed(BrokerSeed(field))?;
                        raw.brokers.push((field, table));
                    }
                }
                Ok(raw)
            }
            /// Fields by position, as serde reads a struct from an array.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDeadLetter, A::Error> {
                let fields = dead_letter_fields();
                let Some(url) = seq.next_element::<Option<String>>()? else {
                    return Err(too_short(0, "RawDeadLetter", fields.len()));
                };
                let mut raw = RawDeadLetter {
                    url,
                    brokers: Vec::new(),
                };
                for (index, kind) in dead_letter_broker_kinds().iter().enumerate() {
                    let Some(table) = seq.next_element_seed(BrokerSeed(kind))? else {
                        return Err(too_short(index + 1, "RawDeadLetter", fields.len()));
                    };
                    raw.brokers.push((*kind, table));
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_struct("RawDeadLetter", dead_letter_fields(), DeadLetterVisitor)
    }
}

/// An array with `found` elements read as the struct `name` of `fields` fields.
fn too_short<E: de::Error>(found: usize, name: &str, fields: usize) -> E {
    E::invalid_length(
        found,
        &format!("struct {name} with {fields} elements").as_str(),
    )
}

/// Reads a key of a table whose fields are `fields`: any other key is an unknown field,
/// reported (with the key) as serde reports one of a struct's.
struct KindSeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KindSeed {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KindSeed {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        self.0
            .iter()
            .find(|field| **field == value)
            .copied()
            .ok_or_else(|| E::unknown_field(value, self.0))
    }
}

/// Reads the `[trigger.<kind>]` table of its kind with the connector's struct.
struct TriggerSeed(&'static str);

impl<'de> DeserializeSeed<'de> for TriggerSeed {
    type Value = Box<dyn TriggerTable>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        read_table(supported_triggers::<D>(), self.0, deserializer)
    }
}

/// Reads the `[dead_letter.<kind>]` table of its kind with the connector's struct.
struct BrokerSeed(&'static str);

impl<'de> DeserializeSeed<'de> for BrokerSeed {
    type Value = Box<dyn DeadLetterTable>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        read_table(supported_dead_letter_brokers::<D>(), self.0, deserializer)
    }
}

/// The table of `kind`, read by its entry of `kinds` (`kind` came from the same list).
fn read_table<'de, D: Deserializer<'de>, T: ?Sized>(
    kinds: Vec<TableKind<'de, D, T>>,
    kind: &str,
    deserializer: D,
) -> Result<Box<T>, D::Error> {
    match kinds.into_iter().find(|entry| entry.name == kind) {
        Some(entry) => (entry.read)(deserializer),
        None => Err(de::Error::custom(format!("unknown kind `{kind}`"))),
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
