//! Job folders for the end-to-end tests: the example's function (with the Python SDK
//! beside it) plus a job.toml made for the test, in a folder every user can reach (a
//! function runs as its job's own user).

use super::*;

#[allow(unused_imports)]
pub use sluice_platform::testing::{CLICK_SCHEMA, JobToml, SHARED_TEST_DIR, raw};

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
    /// A job on Kafka `topic` (from the earliest offset): the example's function with the
    /// end-to-end defaults ([`JobDir::e2e_job`]), then `settings` (the test's `[function]`,
    /// dead letters, …; a key set again replaces the default).
    pub fn new(env: &Env, topic: &str, settings: impl FnOnce(JobToml) -> JobToml) -> JobDir {
        JobDir::with_job(env, topic, |job| {
            settings(
                job.kafka(&env.brokers, topic)
                    .set("trigger.kafka", "start", "earliest"),
            )
        })
    }

    /// The example job in stream mode on a fresh topic named after `tag`, with
    /// `partitions` partitions.
    pub async fn example_on_new_topic(env: &Env, tag: &str, partitions: i32) -> JobDir {
        let topic = unique(tag);
        create_topic(env, &topic, partitions).await;
        JobDir::new(env, &topic, |job| {
            job.set("function", "command", ["python3", "transform.py"])
                .set("function", "mode", "stream")
        })
    }

    /// A job on the AMQP `queue` of the test broker, as [`JobDir::new`] (`settings` may
    /// add to `trigger.amqp`, e.g. `prefetch`).
    pub fn new_amqp(env: &Env, queue: &str, settings: impl FnOnce(JobToml) -> JobToml) -> JobDir {
        JobDir::with_job(env, queue, |job| settings(job.amqp(&env.amqp_url, queue)))
    }

    /// A job whose trigger and function `settings` gives (it consumes `source`, kept as
    /// [`JobDir::topic`]), on the end-to-end defaults.
    fn with_job(env: &Env, source: &str, settings: impl FnOnce(JobToml) -> JobToml) -> JobDir {
        let name = unique("e2e").to_lowercase();
        let prefix = format!("{name}/clicks");
        let job = settings(JobDir::e2e_job(env, &name, &prefix));
        JobDir::with_toml(&job, source, &prefix)
    }

    /// The defaults every end-to-end job starts from: small batches, files closed after a
    /// second, the example's schema and output under `prefix` in the test bucket.
    pub fn e2e_job(env: &Env, name: &str, prefix: &str) -> JobToml {
        let job = JobToml::new(name)
            .set("batch", "max_records", 1000_i64)
            .set("batch", "max_wait", "500ms")
            .set("output", "partition_by", ["event_date"])
            .set("output", "max_file_age", "1s")
            .schema(CLICK_SCHEMA);
        env.output_to(job, prefix)
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
