//! Test support for other crates' tests and this one's (feature `testing`): [`JobToml`],
//! the job spec builder that writes the job.toml a test needs instead of retyping it; the
//! folder functions can reach by path ([`SHARED_TEST_DIR`]) and the pinned pyarrow that
//! Arrow functions import ([`pyarrow_command`]).

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

use crate::spec::{JobSpec, parse_job};

/// The output schema of the clickstream example's function (`jobs/clickstream`).
pub const CLICK_SCHEMA: &str = r#"{ event_id = "utf8 not null", user_id = "int64", action = "utf8", domain = "utf8", path = "utf8", ts = "timestamp_ms", event_date = "date32" }"#;

/// Where tests keep folders a function must reach by path: outside `/tmp` (functions get
/// a private one) and outside the checkout, which may lie in a folder only root can
/// enter (a function runs as its job's own user).
pub const SHARED_TEST_DIR: &str = "/var/lib/sluice-tests";

/// The pinned pyarrow the tests use.
pub const PYARROW: &str = "pyarrow==26.0.1";

/// pyarrow for functions: a job's function runs as a user of its own, which cannot
/// enter root's home (where a pyenv or a venv built from it lives), so pyarrow is
/// installed with `pip install --target` into a folder every user can read, for the
/// system's `python3` (same minor version), on first use. The command to put before a
/// script: `env PYTHONPATH=<that folder> python3`.
pub fn pyarrow_command() -> Vec<String> {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _made = MADE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let site = Path::new(SHARED_TEST_DIR).join("pyarrow-26.0.1");
    let pythonpath = format!("PYTHONPATH={}", site.display());
    let command = vec!["env".to_owned(), pythonpath, "python3".to_owned()];
    let imports = || {
        std::process::Command::new(&command[0])
            .args(&command[1..])
            .args(["-c", "import pyarrow"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !imports() {
        let installed = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&site)
            .arg(PYARROW)
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install {PYARROW} failed");
        assert!(imports(), "pyarrow does not import from {}", site.display());
    }
    command
}

/// A value as it is written in job.toml: strings are quoted, [`raw`] text is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlValue(String);

/// TOML written as is: an array, an inline table (`raw("{ n = \"int64\" }")`).
pub fn raw(text: &str) -> TomlValue {
    TomlValue(text.to_owned())
}

impl From<&str> for TomlValue {
    fn from(text: &str) -> Self {
        // A JSON string is a TOML basic string: the same quotes and escapes.
        TomlValue(serde_json::to_string(text).unwrap())
    }
}

impl From<&String> for TomlValue {
    fn from(text: &String) -> Self {
        text.as_str().into()
    }
}

impl From<String> for TomlValue {
    fn from(text: String) -> Self {
        text.as_str().into()
    }
}

impl From<i64> for TomlValue {
    fn from(number: i64) -> Self {
        TomlValue(number.to_string())
    }
}

impl From<usize> for TomlValue {
    fn from(number: usize) -> Self {
        TomlValue(number.to_string())
    }
}

impl From<bool> for TomlValue {
    fn from(flag: bool) -> Self {
        TomlValue(flag.to_string())
    }
}

impl<const N: usize> From<[&str; N]> for TomlValue {
    fn from(items: [&str; N]) -> Self {
        items.as_slice().into()
    }
}

impl From<&[&str]> for TomlValue {
    fn from(items: &[&str]) -> Self {
        TomlValue(serde_json::to_string(items).unwrap())
    }
}

impl From<&[String]> for TomlValue {
    fn from(items: &[String]) -> Self {
        TomlValue(serde_json::to_string(items).unwrap())
    }
}

/// A job.toml built field by field. Tables come out in the order they were first set
/// (TOML allows `[trigger.kafka.options]` after `[output]`); setting a key again replaces
/// its value.
///
/// ```
/// use sluice_platform::testing::JobToml;
/// let toml = JobToml::new("clicks")
///     .kafka("127.0.0.1:9092", "clicks")
///     .set("function", "command", ["cat"])
///     .output("out")
///     .schema("{ n = \"int64\" }")
///     .to_toml();
/// assert!(toml.starts_with("name = \"clicks\"\n[trigger.kafka]\nbrokers = \"127.0.0.1:9092\"\n"));
/// ```
#[derive(Debug, Clone)]
pub struct JobToml {
    name: String,
    tables: Vec<(String, Vec<(String, TomlValue)>)>,
}

impl JobToml {
    /// A job named `name` with nothing else yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            tables: Vec::new(),
        }
    }

    /// The clickstream example's job (`jobs/clickstream/transform.py` as a stream-mode
    /// function, its schema, partitioned by date) without a trigger or an output URL.
    pub fn clickstream(name: &str) -> Self {
        Self::new(name)
            .set("function", "command", ["python3", "transform.py"])
            .set("function", "mode", "stream")
            .set("output", "partition_by", ["event_date"])
            .schema(CLICK_SCHEMA)
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `key` of `table` (`"trigger.bucket.options"`, `"batch"`, …).
    pub fn set(mut self, table: &str, key: &str, value: impl Into<TomlValue>) -> Self {
        let value = value.into();
        let index = match self.tables.iter().position(|(name, _)| name == table) {
            Some(index) => index,
            None => {
                self.tables.push((table.to_owned(), Vec::new()));
                self.tables.len() - 1
            }
        };
        let entries = &mut self.tables[index].1;
        match entries.iter_mut().find(|(name, _)| name == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key.to_owned(), value)),
        }
        self
    }

    /// A Kafka trigger on `topic`.
    pub fn kafka(self, brokers: &str, topic: &str) -> Self {
        self.set("trigger.kafka", "brokers", brokers)
            .set("trigger.kafka", "topic", topic)
    }

    /// An AMQP trigger on `queue`.
    pub fn amqp(self, url: &str, queue: &str) -> Self {
        self.set("trigger.amqp", "url", url)
            .set("trigger.amqp", "queue", queue)
    }

    /// A bucket trigger reading `url` (listing, unless `mode` is set).
    pub fn bucket(self, url: &str) -> Self {
        self.set("trigger.bucket", "url", url)
    }

    /// Output to `url`.
    pub fn output(self, url: &str) -> Self {
        self.set("output", "url", url)
    }

    /// The output schema, as an inline table.
    pub fn schema(self, inline_table: &str) -> Self {
        self.set("output", "schema", raw(inline_table))
    }

    /// The text of job.toml.
    pub fn to_toml(&self) -> String {
        let mut text = format!("name = {}\n", TomlValue::from(&self.name).0);
        for (table, entries) in &self.tables {
            writeln!(text, "[{table}]").unwrap();
            for (key, value) in entries {
                writeln!(text, "{key} = {}", value.0).unwrap();
            }
        }
        text
    }

    /// Writes `dir/job.toml`.
    pub fn write_in(&self, dir: &Path) {
        std::fs::write(dir.join("job.toml"), self.to_toml()).unwrap();
    }

    /// The validated spec, as if read from `dir/job.toml` with no environment; panics
    /// with the errors when it is not valid.
    pub fn spec(&self, dir: &Path) -> JobSpec {
        parse_job(&self.to_toml(), &dir.join("job.toml"), dir, &|_| None)
            .unwrap_or_else(|errors| panic!("{errors}\n{}", self.to_toml()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_tables_in_order_and_replaces_a_key_set_again() {
        let toml = JobToml::new("j")
            .bucket("s3://b/in")
            .set("batch", "max_records", 10_usize)
            .set("trigger.bucket.options", "endpoint", "http://x")
            .set("batch", "max_records", 20_usize)
            .to_toml();
        assert_eq!(
            toml,
            "name = \"j\"\n[trigger.bucket]\nurl = \"s3://b/in\"\n[batch]\nmax_records = 20\n[trigger.bucket.options]\nendpoint = \"http://x\"\n"
        );
    }

    #[test]
    fn strings_are_quoted_and_escaped() {
        let toml = JobToml::new("j")
            .set("function", "command", ["sh", "-c", "echo \"hi\"\n"])
            .to_toml();
        assert!(
            toml.contains(r#"command = ["sh","-c","echo \"hi\"\n"]"#),
            "{toml}"
        );
    }

    #[test]
    fn the_clickstream_job_is_a_valid_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("transform.py"), "").unwrap();
        let spec = JobToml::clickstream("clicks")
            .kafka("127.0.0.1:9092", "clicks")
            .output("lake")
            .spec(dir.path());
        assert_eq!(spec.name, "clicks");
    }
}
