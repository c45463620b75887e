//! `sluice deploy JOB_DIR`: validates the folder locally (as `sluice validate`), packs it
//! as a bundle, uploads it, prints the version and waits until that version runs — or
//! prints why it does not.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_platform::control::bundle::pack_folder;
use sluice_platform::spec::load_job;

use crate::client::{Client, ClientError, exit_code_of};

pub struct DeployOptions {
    pub server: Option<String>,
    pub json: bool,
    /// Return once uploaded, without waiting for the version to run.
    pub no_wait: bool,
    pub timeout: Duration,
}

pub async fn deploy(job_dir: &Path, options: DeployOptions) -> anyhow::Result<ExitCode> {
    let spec = match load_job(job_dir) {
        Ok(spec) => spec,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let bundle = match pack_folder(job_dir) {
        Ok(bundle) => bundle,
        Err(error) => {
            eprintln!("sluice: packing {}: {error}", job_dir.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    Ok(exit_code_of(upload(&spec.name, bundle, options).await))
}

/// Deploys `bundle` as job `name`, then waits for it to run unless told not to.
async fn upload(name: &str, bundle: Vec<u8>, options: DeployOptions) -> Result<(), ClientError> {
    let client = Client::new(options.server)?;
    let path = format!("/v1/jobs/{name}");
    let deployed = client
        .call(reqwest::Method::PUT, &path, Some(bundle))
        .await?;
    let version = deployed["version"].as_i64().unwrap_or_default();
    if !options.json {
        let what = if deployed["new_version"].as_bool() == Some(true) {
            "deployed"
        } else {
            "unchanged, already"
        };
        println!("{name}: {what} version {version}");
    }
    if options.no_wait {
        if options.json {
            println!("{deployed}");
        }
        return Ok(());
    }
    let job = wait_until_running(&client, &path, version, options.timeout).await?;
    if options.json {
        println!("{}", serde_json::json!({"deployed": deployed, "job": job}));
    } else {
        println!("{name}: version {version} is running");
    }
    Ok(())
}

/// Polls the job until `version` runs here and its pipeline reports `running`.
async fn wait_until_running(
    client: &Client,
    path: &str,
    version: i64,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let job = client.get(path).await?;
        let running_version = job["running_version"].as_i64();
        let pipeline = job["status"]["state"].as_str().unwrap_or("");
        if job["state"] == "failed" || (running_version == Some(version) && pipeline == "failed") {
            let reason = job["reason"]
                .as_str()
                .or_else(|| job["status"]["reason"].as_str())
                .unwrap_or("no reason given");
            return Err(ClientError::Failed(format!(
                "version {version} does not run: {reason}"
            )));
        }
        if job["version"].as_i64() != Some(version) {
            return Err(ClientError::Failed(format!(
                "another version ({}) was deployed meanwhile",
                job["version"]
            )));
        }
        if job["state"] == "paused" {
            return Err(ClientError::Failed(format!(
                "version {version} is deployed but the job is paused; `sluice jobs resume` runs it"
            )));
        }
        if running_version == Some(version) && pipeline == "running" {
            return Ok(job);
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Failed(format!(
                "version {version} did not report running within {}s (pipeline: {pipeline})",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
