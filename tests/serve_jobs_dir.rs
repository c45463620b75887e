//! End to end: `sluice serve --jobs DIR` registers every job folder in DIR at start, the
//! docker-compose way. An unchanged folder keeps its version across restarts, a changed
//! one becomes the next version; SIGTERM drains and exits 0; without tokens serve refuses
//! any address beyond loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::Serve;
use common::*;
use serde_json::Value;

/// `sluice serve --jobs JOBS` without tokens (loopback only).
fn start_serve(env: &Env, data: &Path, jobs: &Path, tag: &str) -> Serve {
    Serve::start(env, data, tag, |command| {
        command
            .arg("--jobs")
            .arg(jobs)
            .env_remove("SLUICE_API_TOKENS");
    })
}

/// The registered jobs, once the server answers (60 s at most).
async fn registered_jobs(serve: &mut Serve) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = serve.exited() {
            panic!("serve exited with {status}; logs:\n{}", serve.logs());
        }
        if let Some(body) = http_get(serve.port, "/v1/jobs").await
            && let Ok(jobs) = serde_json::from_str::<Value>(&body)
        {
            return jobs["jobs"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no answer; logs:\n{}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(from.join("job.toml"), to.join("job.toml")).unwrap();
    copy_example_function(to);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_folders_are_registered_at_start_and_keep_their_version() {
    let env = env();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let jobs_dir = work.path().join("jobs");
    let job = JobDir::example_on_new_topic(&env, "serve-dir-clicks", 1).await;
    let topic = job.topic.clone();
    let folder = jobs_dir.join("clicks");
    copy_folder(job.path(), &folder);
    produce(
        &env,
        &topic,
        &(0..200)
            .map(|i| (format!("k{i}"), Click::numbered(i).json()))
            .collect::<Vec<_>>(),
    )
    .await;

    let mut serve = start_serve(&env, &data, &jobs_dir, "first");
    let jobs = registered_jobs(&mut serve).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["name"], job.name.as_str());
    assert_eq!(jobs[0]["version"], 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    while count_ids(&read_rows(&env, &job.prefix).await).len() < 200 {
        assert!(
            Instant::now() < deadline,
            "rows missing; logs:\n{}",
            serve.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let status = serve.terminate();
    let logs = serve.logs();
    assert!(status.success(), "{status}; logs:\n{logs}");

    // Unchanged: the same version.
    let mut serve = start_serve(&env, &data, &jobs_dir, "second");
    assert_eq!(registered_jobs(&mut serve).await[0]["version"], 1);
    let status = serve.terminate();
    assert!(status.success());

    // Changed: the next version.
    std::fs::write(
        folder.join("transform.py"),
        "# v2\n".to_owned() + &std::fs::read_to_string(folder.join("transform.py")).unwrap(),
    )
    .unwrap();
    let mut serve = start_serve(&env, &data, &jobs_dir, "third");
    assert_eq!(registered_jobs(&mut serve).await[0]["version"], 2);
    let rows = read_rows(&env, &job.prefix).await;
    assert_eq!(rows.len(), 200, "exactly once across restarts");
    drop(serve);

    // Without tokens, only loopback.
    let refused = Command::new(sluice_binary())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .arg("--data")
        .arg(work.path().join("other"))
        .env_remove("SLUICE_API_TOKENS")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("without tokens"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
