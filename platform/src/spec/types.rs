//! The validated job: domain types produced by [`super::load_job`]. Every value here has
//! already been checked; code downstream never re-validates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_connectors::dead_letter::LetterBroker;
use sluice_connectors::trigger::Trigger;

use super::secret::{RedactedOptions, Secrets};
use crate::output::schema::OutputSchema;

/// A job, validated. `Debug` masks every secret of the job, wherever it is.
#[derive(Clone)]
pub struct JobSpec {
    /// `[a-z0-9][a-z0-9_-]*`, at most 63 characters.
    pub name: String,
    /// The job folder (absolute); the function runs here.
    pub dir: PathBuf,
    pub trigger: TriggerSpec,
    pub function: FunctionSpec,
    pub batch: BatchSpec,
    pub scaling: ScalingSpec,
    pub output: OutputSpec,
    /// Where dead letters go; `None`: NDJSON objects under
    /// `<output.url>/_sluice/dead_letters`.
    pub dead_letter: Option<DeadLetterSpec>,
    /// Every secret value of the job (from secret-looking `${NAME}` references, URL
    /// passwords, secret-looking option keys); text shown to anyone passes through
    /// [`JobSpec::redact`].
    pub secrets: Secrets,
}

impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The parts mask by key or type; a secret under an innocent name (a function
        // variable `X = "${DB_SECRET}"`) is caught by scrubbing the whole text.
        let text = format!(
            "JobSpec {{ name: {:?}, dir: {:?}, trigger: {:?}, function: {:?}, batch: {:?}, \
             scaling: {:?}, output: {:?}, dead_letter: {:?}, secrets: {:?} }}",
            self.name,
            self.dir,
            self.trigger,
            self.function,
            self.batch,
            self.scaling,
            self.output,
            self.dead_letter,
            self.secrets
        );
        f.write_str(&self.secrets.redact_values(&text))
    }
}

impl JobSpec {
    /// `text` with the job's secrets and any URL userinfo masked; for messages, logs and
    /// status.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.secrets.redact(text)
    }
}

/// `[dead_letter]`: one destination.
#[derive(Debug, Clone)]
pub enum DeadLetterSpec {
    /// NDJSON objects under a store prefix (`file://`, `s3://` or `memory://` URL).
    Store { url: String },
    /// Messages kept by a broker (`[dead_letter.<kind>]`), through its connector.
    Broker(Arc<dyn LetterBroker>),
}

impl DeadLetterSpec {
    /// The broker that keeps the letters, through its connector; `None` for a store.
    pub fn broker(&self) -> Option<&dyn LetterBroker> {
        match self {
            DeadLetterSpec::Store { .. } => None,
            DeadLetterSpec::Broker(broker) => Some(broker.as_ref()),
        }
    }

    /// The connector's configuration as `T`, when the letters go to a broker of that
    /// kind.
    pub fn broker_config<T: LetterBroker + 'static>(&self) -> Option<&T> {
        self.broker()?.as_any().downcast_ref()
    }
}

/// `[trigger.<kind>]`: the connector's own configuration, produced by validation (see
/// `sluice_connectors::registry` for the kinds). The platform asks it for everything that
/// differs by kind through [`Trigger`]; [`TriggerSpec::config`] gives the concrete type
/// back to code that needs it.
#[derive(Debug, Clone)]
pub struct TriggerSpec(Arc<dyn Trigger>);

impl TriggerSpec {
    pub fn new(config: impl Trigger + 'static) -> Self {
        Self(Arc::new(config))
    }

    /// The connector's configuration as `T`, when the trigger is of that kind.
    pub fn config<T: Trigger + 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

impl From<Arc<dyn Trigger>> for TriggerSpec {
    fn from(trigger: Arc<dyn Trigger>) -> Self {
        Self(trigger)
    }
}

impl std::ops::Deref for TriggerSpec {
    type Target = dyn Trigger;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionMode {
    /// One process per batch.
    Exec,
    /// A long-lived instance handles batch after batch.
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON value per line (see `docs/function-protocol.md`).
    Ndjson,
    /// One Arrow IPC stream per batch, each way.
    Arrow,
}

impl Encoding {
    /// The name used in `job.toml` and in `SLUICE_ENCODING`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Ndjson => "ndjson",
            Encoding::Arrow => "arrow",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputMode {
    /// Each input line is the message value (JSON values verbatim).
    Value,
    /// Each input line is an object with the payload and its metadata.
    Envelope,
}

/// `[function]`. `Debug` masks environment values whose name looks secret.
#[derive(Clone, PartialEq)]
pub struct FunctionSpec {
    /// Program and arguments; a relative program path resolves against the job folder.
    pub command: Vec<String>,
    pub mode: FunctionMode,
    pub encoding: Encoding,
    pub input: InputMode,
    /// With `encoding = "arrow"`: the declared Arrow schema of the input records (the
    /// message values); `None` infers it from each batch.
    pub input_schema: Option<arrow_schema::SchemaRef>,
    /// Per-batch timeout; the whole process group is killed when it passes.
    pub timeout: Duration,
    /// Memory limit per instance, bytes: a cgroup memory limit where cgroups are usable
    /// (the kernel OOM-kills the instance), else an address-space limit (RLIMIT_AS) per
    /// process.
    pub memory: Option<u64>,
    /// Open-file limit (RLIMIT_NOFILE) per instance.
    pub open_files: u64,
    /// CPU-seconds limit (RLIMIT_CPU) per instance, when declared.
    pub cpu_time: Option<Duration>,
    /// Most bytes a function may write to stdout for one batch.
    pub max_output: u64,
    /// Most processes (threads included) an instance may run at once; enforced by the
    /// cgroup `pids` controller where cgroups are usable.
    pub max_processes: u64,
    /// Whether the function may use the network. When false, it runs in a network
    /// namespace of its own (loopback only), where the kernel allows.
    pub network: bool,
    /// Declared environment, `${ENV}` expanded. Nothing else of the platform's
    /// environment reaches the function except PATH, HOME and LANG.
    pub env: BTreeMap<String, String>,
    /// Attempts per batch (first try included) before the job stops.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each attempt, with jitter.
    pub retry_backoff: Duration,
    /// Records older than this go to the dead letters instead of the function.
    pub max_record_age: Option<Duration>,
    /// Python modules a parent interpreter (the zygote) imports once before forking
    /// instances; empty: every instance is spawned afresh. When not empty, `command` is
    /// `[python interpreter, script, args...]` (checked at load).
    pub preload: Vec<String>,
    /// What happens where the host refuses one of the function's protections.
    pub isolation: IsolationLevel,
}

/// `function.isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    /// The job does not start while a protection is missing.
    Strict,
    /// The job starts; missing protections are reported.
    BestEffort,
}

impl std::fmt::Debug for FunctionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSpec")
            .field("command", &self.command)
            .field("mode", &self.mode)
            .field("encoding", &self.encoding)
            .field("input", &self.input)
            .field("timeout", &self.timeout)
            .field("memory", &self.memory)
            .field("open_files", &self.open_files)
            .field("cpu_time", &self.cpu_time)
            .field("max_output", &self.max_output)
            .field("max_processes", &self.max_processes)
            .field("network", &self.network)
            .field("env", &RedactedOptions(&self.env))
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_record_age", &self.max_record_age)
            .field("preload", &self.preload)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    pub max_records: usize,
    pub max_bytes: u64,
    pub max_wait: Duration,
    /// A batch no event reached for this long (while the source is read) is cut; at or
    /// above `max_wait` it changes nothing.
    pub max_idle: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ScalingSpec {
    pub min_instances: u32,
    pub max_instances: u32,
    pub idle_timeout: Duration,
    pub ordering: Ordering,
}

/// Which batches of one split (a Kafka partition, a queue, an object) may run at the same
/// time. Output and acknowledgements always follow the input order; this decides only
/// what the function may see concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// One batch per split at a time: the function sees each split in order.
    Partition,
    /// Several batches per split, but never two holding the same key at once.
    Key,
    /// Batches of a split run concurrently as instances allow.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Snappy,
    None,
}

/// `[output]`. `Debug` masks secret options.
#[derive(Clone)]
pub struct OutputSpec {
    /// `file://`, `s3://` or `memory://` URL of the output prefix.
    pub url: String,
    /// Column names, each present in `schema`.
    pub partition_by: Vec<String>,
    pub schema: OutputSchema,
    pub compression: Compression,
    /// A file is closed once its encoded size reaches this many bytes.
    pub max_file_size: u64,
    /// A file is closed at most this long after its first row.
    pub max_file_age: Duration,
    /// Store options (`endpoint`, `region`, `access_key_id`, …), `${ENV}` expanded.
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for OutputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSpec")
            .field("url", &self.url)
            .field("partition_by", &self.partition_by)
            .field("schema", &self.schema)
            .field("compression", &self.compression)
            .field("max_file_size", &self.max_file_size)
            .field("max_file_age", &self.max_file_age)
            .field("options", &RedactedOptions(&self.options))
            .finish()
    }
}
