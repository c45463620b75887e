//! Job folders for the end-to-end tests: the example's function (with the Python SDK
//! beside it) plus a job.toml made for the test, in a folder every user can reach (a
//! function runs as its job's own user).

use super::*;

#[allow(unused_imports)]
pub use sluice_platform::testing::{CLICK_SCHEMA, JobToml, raw};

impl Env {
    /// `job` with its output under `prefix` in the test bucket of the S3 endpoint.
    pub fn output_to(&self, job: JobToml, prefix: &str) -> JobToml {
        job.output(&format!("s3://{}/{prefix}", self.bucket)).set(
            "output.options",
            "endpoint",
            &self.s3_endpoint,
        )
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the clickstream example's transform.py into `dir`, with the Python SDK it
/// imports beside it (`dir/sluice_fn/`), as `sluice init` lays a job folder out.
pub fn copy_example_function(dir: &Path) {
    std::fs::copy(
        repo_root().join("jobs/clickstream/transform.py"),
        dir.join("transform.py"),
    )
    .unwrap();
    let sdk = dir.join("sluice_fn");
    std::fs::create_dir_all(&sdk).unwrap();
    for entry in std::fs::read_dir(repo_root().join("python/sluice_fn")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "py") {
            std::fs::copy(&path, sdk.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Where job folders are made, reachable by every user's path lookups.
pub const SHARED_TEST_DIR: &str = "/var/lib/sluice-tests";

/// A fresh folder outside /tmp (a function sees a private /tmp of its own) and outside the
/// checkout (which may lie in a folder only root can enter): some tests let the function
/// write here (`JobDir::writable_by_functions`).
fn shared_tempdir() -> tempfile::TempDir {
    let base = PathBuf::from(SHARED_TEST_DIR);
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(&base).unwrap()
}

/// A job folder: the example's transform.py plus a job.toml made for the test.
pub struct JobDir {
    pub dir: tempfile::TempDir,
    pub name: String,
    /// The Kafka topic or AMQP queue the job consumes.
    pub topic: String,
    pub prefix: String,
}

impl JobDir {
    /// A job on Kafka `topic` (from the earliest offset). `function` is the `[function]`
    /// table body; `extra` goes at the end of job.toml.
    pub fn new(env: &Env, topic: &str, function: &str, extra: &str) -> JobDir {
        let trigger = format!(
            "[trigger.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\nstart = \"earliest\"",
            brokers = env.brokers
        );
        JobDir::with_trigger(env, &trigger, topic, function, extra)
    }

    /// The example job in stream mode on a fresh topic named after `tag`, with
    /// `partitions` partitions.
    pub async fn example_on_new_topic(env: &Env, tag: &str, partitions: i32) -> JobDir {
        let topic = unique(tag);
        create_topic(env, &topic, partitions).await;
        JobDir::new(
            env,
            &topic,
            "command = [\"python3\", \"transform.py\"]\nmode = \"stream\"",
            "",
        )
    }

    /// A job on the AMQP `queue` of the test broker; `trigger_extra` adds lines to
    /// `[trigger.amqp]` (e.g. `prefetch = 500`).
    pub fn new_amqp(
        env: &Env,
        queue: &str,
        trigger_extra: &str,
        function: &str,
        extra: &str,
    ) -> JobDir {
        let trigger = format!(
            "[trigger.amqp]\nurl = \"{url}\"\nqueue = \"{queue}\"\n{trigger_extra}",
            url = env.amqp_url
        );
        JobDir::with_trigger(env, &trigger, queue, function, extra)
    }

    /// A job with the given trigger table (whole, header included); `source` names what
    /// it consumes (kept as [`JobDir::topic`]).
    pub fn with_trigger(
        env: &Env,
        trigger: &str,
        source: &str,
        function: &str,
        extra: &str,
    ) -> JobDir {
        let dir = shared_tempdir();
        copy_example_function(dir.path());
        let name = unique("e2e").to_lowercase();
        let prefix = format!("{name}/clicks");
        let toml = format!(
            r#"name = "{name}"
{trigger}
[function]
{function}
[batch]
max_records = 1000
max_wait = "500ms"
[output]
url = "s3://{bucket}/{prefix}"
partition_by = ["event_date"]
max_file_age = "1s"
schema = {{ event_id = "utf8 not null", user_id = "int64", action = "utf8", domain = "utf8", path = "utf8", ts = "timestamp_ms", event_date = "date32" }}
[output.options]
endpoint = "{endpoint}"
{extra}
"#,
            bucket = env.bucket,
            endpoint = env.s3_endpoint,
        );
        std::fs::write(dir.path().join("job.toml"), toml).unwrap();
        JobDir {
            dir,
            name,
            topic: source.to_owned(),
            prefix,
        }
    }

    /// A folder in the shared test folder with the example's function and `job` as its
    /// job.toml; `source` names what it consumes, `prefix` where its output goes.
    pub fn with_toml(job: &JobToml, source: &str, prefix: &str) -> JobDir {
        let dir = shared_tempdir();
        copy_example_function(dir.path());
        job.write_in(dir.path());
        JobDir {
            dir,
            name: job.name().to_owned(),
            topic: source.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn group(&self) -> String {
        format!("sluice-{}", self.name)
    }

    /// Lets the function, which runs as its job's own user and sees its files only
    /// through a read-only copy, write into this folder (by its absolute path, returned).
    pub fn writable_by_functions(&self) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        self.path().display().to_string()
    }

    pub fn write(&self, file: &str, content: &str) {
        std::fs::write(self.path().join(file), content).unwrap();
    }
}
