//! `sluice jobs list|show|pause|resume|rollback|delete|versions`: the registered jobs of a
//! server, as human tables or, with `--json`, as the API's JSON.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use crate::client::{Client, ClientError, exit_code_of};

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Every job: version, state, instances, backlog.
    List,
    /// One job: version, state and why, instances, counters, job.toml.
    Show { name: String },
    /// Drain the job and hold it (no function process; source positions kept).
    Pause { name: String },
    /// Run a paused (or failed) job again from its committed positions.
    Resume { name: String },
    /// Run an earlier version (default: the one before the current).
    Rollback {
        name: String,
        /// The version to go back to.
        #[arg(long, value_name = "N")]
        to: Option<i64>,
    },
    /// Drain and stop the job and remove it from the list (outputs and dead letters stay).
    Delete { name: String },
    /// The job's versions: number, sha256, who deployed it and when.
    Versions { name: String },
    /// The job's newest batch attempts: outcome, duration, cold start, records.
    Invocations {
        name: String,
        /// How many, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

pub async fn jobs(
    command: JobsCommand,
    server: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    Ok(exit_code_of(call(command, server, json).await))
}

async fn call(command: JobsCommand, server: Option<String>, json: bool) -> Result<(), ClientError> {
    let client = Client::new(server)?;
    let post = reqwest::Method::POST;
    let result = match &command {
        JobsCommand::List => client.get("/v1/jobs").await,
        JobsCommand::Show { name } => client.get(&job_path(name)).await,
        JobsCommand::Pause { name } => {
            client
                .call(post, &format!("{}/pause", job_path(name)), None)
                .await
        }
        JobsCommand::Resume { name } => {
            client
                .call(post, &format!("{}/resume", job_path(name)), None)
                .await
        }
        JobsCommand::Rollback { name, to } => {
            let body = to.map(|version| serde_json::json!({ "version": version }).to_string());
            let path = format!("{}/rollback", job_path(name));
            client.call(post, &path, body.map(String::into_bytes)).await
        }
        JobsCommand::Delete { name } => {
            client
                .call(reqwest::Method::DELETE, &job_path(name), None)
                .await
        }
        JobsCommand::Versions { name } => client.get(&format!("{}/versions", job_path(name))).await,
        JobsCommand::Invocations { name, limit } => {
            let path = format!("{}/invocations?limit={limit}", job_path(name));
            client.get(&path).await
        }
    };
    let body = result?;
    if json {
        println!("{body}");
        return Ok(());
    }
    match command {
        JobsCommand::List => print_jobs(body["jobs"].as_array().map_or(&[][..], Vec::as_slice)),
        JobsCommand::Versions { .. } => print_versions(&body),
        JobsCommand::Invocations { .. } => print_invocations(&body),
        JobsCommand::Delete { name } => println!("{name}: deleted"),
        JobsCommand::Show { .. } => print_job(&body),
        JobsCommand::Pause { .. } | JobsCommand::Resume { .. } | JobsCommand::Rollback { .. } => {
            print_jobs(std::slice::from_ref(&body));
        }
    }
    Ok(())
}

fn job_path(name: &str) -> String {
    format!("/v1/jobs/{name}")
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|title| (*title).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_jobs(jobs: &[Value]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let status = &job["status"];
            vec![
                text(&job["name"]),
                text(&job["version"]),
                text(&job["state"]),
                text(&job["running_version"]),
                text(&status["state"]),
                text(&status["instances"]["busy"]),
                text(&status["instances"]["idle"]),
                text(&status["backlog"]),
                text(&status["stats"]["records_in"]),
                text(&job["reason"]),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME", "VERSION", "STATE", "RUNNING", "PIPELINE", "BUSY", "IDLE", "BACKLOG",
            "RECORDS", "REASON",
        ],
        &rows,
    );
}

fn print_job(job: &Value) {
    print_jobs(std::slice::from_ref(job));
    let status = &job["status"];
    if let Some(reason) = status["reason"].as_str() {
        println!("\npipeline: {reason}");
    }
    if let Some(stats) = status["stats"].as_object() {
        println!();
        for (counter, value) in stats {
            println!("{counter:<20} {value}");
        }
    }
    if let Some(toml) = job["job_toml"].as_str() {
        println!("\n# job.toml (sha256 {})\n{toml}", text(&job["sha256"]));
    }
}

fn print_versions(body: &Value) {
    let current = body["current"].as_i64();
    let rows: Vec<Vec<String>> = body["versions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|version| {
            let marker = if version["version"].as_i64() == current {
                "*"
            } else {
                ""
            };
            vec![
                format!("{}{marker}", text(&version["version"])),
                text(&version["sha256"]).chars().take(12).collect(),
                text(&version["deployed_by"]),
                format_ms(version["deployed_ms"].as_i64()),
            ]
        })
        .collect();
    print_table(&["VERSION", "SHA256", "DEPLOYED BY", "DEPLOYED AT"], &rows);
}

fn print_invocations(body: &Value) {
    let rows: Vec<Vec<String>> = body["invocations"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|invocation| {
            vec![
                format_ms(invocation["started_ms"].as_i64()),
                text(&invocation["version"]),
                text(&invocation["instance"]),
                text(&invocation["outcome"]),
                format!("{} ms", text(&invocation["duration_ms"])),
                text(&invocation["cold_start"]),
                text(&invocation["records_in"]),
                text(&invocation["rows_out"]),
                text(&invocation["rejected"]),
                text(&invocation["dead_letters"]),
            ]
        })
        .collect();
    print_table(
        &[
            "STARTED", "VERSION", "INSTANCE", "OUTCOME", "DURATION", "COLD", "IN", "OUT",
            "REJECTED", "DEAD",
        ],
        &rows,
    );
}

fn format_ms(ms: Option<i64>) -> String {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(time).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}
