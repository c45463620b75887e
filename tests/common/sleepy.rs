//! A stream-mode test function that sleeps per batch (tests/autoscaling/sleepy.py), for
//! the autoscaling tests and benchmark.

use super::{Env, JobDir, repo_root};

/// A job folder running tests/autoscaling/sleepy.py on `topic`.
pub fn sleepy_job(
    env: &Env,
    topic: &str,
    scaling: &str,
    batch: &str,
    fn_env: &str,
) -> (JobDir, String) {
    let job = JobDir::new(env, topic, "command = [\"true\"]", "");
    std::fs::copy(
        repo_root().join("tests/autoscaling/sleepy.py"),
        job.path().join("sleepy.py"),
    )
    .unwrap();
    let log = format!("{}/batches.log", job.writable_by_functions());
    let toml = format!(
        r#"name = "{name}"
[trigger.kafka]
brokers = "{brokers}"
topic = "{topic}"
start = "earliest"
[function]
command = ["python3", "sleepy.py", "{name}", "{log}"]
mode = "stream"
input = "envelope"
timeout = "60s"
env = {{ {fn_env} }}
[batch]
{batch}
[scaling]
{scaling}
[output]
url = "s3://{bucket}/{prefix}"
max_file_age = "300ms"
schema = {{ id = "int64 not null", key = "utf8", partition = "int32", offset = "int64", processed_ns = "int64" }}
[output.options]
endpoint = "{endpoint}"
"#,
        name = job.name,
        brokers = env.brokers,
        bucket = env.bucket,
        prefix = job.prefix,
        endpoint = env.s3_endpoint,
    );
    job.write("job.toml", &toml);
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
