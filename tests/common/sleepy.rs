//! A stream-mode test function that sleeps per batch (tests/autoscaling/sleepy.py), for
//! the autoscaling tests and benchmark.

use super::{Env, JobDir, JobToml, repo_root};

/// A job folder running tests/autoscaling/sleepy.py on `topic`; `settings` adds the
/// test's own (`[scaling]`, `[batch]`, the function's environment as `function.env`).
pub fn sleepy_job(
    env: &Env,
    topic: &str,
    settings: impl FnOnce(JobToml) -> JobToml,
) -> (JobDir, String) {
    let job = JobDir::new(env, topic, |job| job.set("function", "command", ["true"]));
    std::fs::copy(
        repo_root().join("tests/autoscaling/sleepy.py"),
        job.path().join("sleepy.py"),
    )
    .unwrap();
    let log = format!("{}/batches.log", job.writable_by_functions());
    let toml = JobToml::new(&job.name)
        .kafka(&env.brokers, topic)
        .set("trigger.kafka", "start", "earliest")
        .set(
            "function",
            "command",
            ["python3", "sleepy.py", &job.name, &log],
        )
        .set("function", "mode", "stream")
        .set("function", "input", "envelope")
        .set("function", "timeout", "60s");
    let toml = settings(toml)
        .output(&format!("s3://{}/{}", env.bucket, job.prefix))
        .set("output", "max_file_age", "300ms")
        .schema(
            r#"{ id = "int64 not null", key = "utf8", partition = "int32", offset = "int64", processed_ns = "int64" }"#,
        )
        .set("output.options", "endpoint", &env.s3_endpoint);
    toml.write_in(job.path());
    (job, log)
}

/// `n` records `{"id", "key"}`, keyed by `key_of(id)`.
pub fn records(n: usize, key_of: impl Fn(usize) -> String) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let key = key_of(i);
            (
                key.clone(),
                serde_json::json!({ "id": i, "key": key }).to_string(),
            )
        })
        .collect()
}
