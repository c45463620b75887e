//! `sluice dlq list|show|replay JOB`: inspect dead letters and run them through the job
//! again — of a job folder here, or of a job registered on a server.
//!
//! JOB is a job folder, or the name of a job on the server given by `--server`; without
//! `--server`, `SLUICE_SERVER` names the server when JOB is not a path that exists.
//! On a server the exit codes are those of the other client verbs (see `client.rs`);
//! `--json` prints the API's JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};
use sluice_platform::control::deadletters::DeadLetterSummary;
use sluice_platform::deadletter::replay::{ReplaySource, read_dead_letters};
use sluice_platform::pipeline::{Job, JobRuntime};
use sluice_platform::spec::units::parse_duration;
use sluice_platform::spec::{JobSpec, load_job};
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientError, exit_code_of};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One line per dead-letter object (or topic partition, or queue): name, letters,
    /// first error. Changes nothing.
    List {
        /// A job folder, or a job's name on the server.
        #[arg(value_name = "JOB_DIR|NAME")]
        job: PathBuf,
    },
    /// Print the dead letters as JSON lines. Changes nothing.
    Show {
        #[arg(value_name = "JOB_DIR|NAME")]
        job: PathBuf,
        /// Print at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Run every dead letter through the job's function again and write the output; once
    /// its output is durable a replayed letter leaves the pending set (its object moves
    /// under `replayed/`; its topic offset is committed; its queue message is acked). On a
    /// server the replay runs beside the job, which keeps its state.
    Replay {
        #[arg(value_name = "JOB_DIR|NAME")]
        job: PathBuf,
        /// On a server: return once the replay started.
        #[arg(long)]
        no_wait: bool,
        /// On a server: how long to wait for the replay to finish, e.g. 10m.
        #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
}

impl DlqCommand {
    fn job(&self) -> &Path {
        match self {
            Self::List { job } | Self::Show { job, .. } | Self::Replay { job, .. } => job,
        }
    }
}

pub async fn dlq(
    command: DlqCommand,
    server: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let remote = server.is_some()
        || (std::env::var_os("SLUICE_SERVER").is_some() && !command.job().exists());
    if remote {
        return Ok(exit_code_of(remote_dlq(command, server, json).await));
    }
    match command {
        DlqCommand::List { job } => list(&load(&job)?, json).await,
        DlqCommand::Show { job, limit } => show(&load(&job)?, limit, json).await,
        DlqCommand::Replay { job, .. } => replay(&load(&job)?, json).await,
    }
}

fn load(job_dir: &Path) -> anyhow::Result<JobSpec> {
    load_job(job_dir).map_err(|errors| anyhow::anyhow!("{errors}"))
}

async fn list(spec: &JobSpec, json: bool) -> anyhow::Result<ExitCode> {
    let listing = read_dead_letters(spec, None).await?;
    let summary = DeadLetterSummary::new(&spec.name, &listing, None);
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&serde_json::to_value(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(summary: &Value) {
    println!(
        "{} dead letters in {} {} at {}",
        summary["total"],
        summary["objects"].as_array().map_or(0, Vec::len),
        summary["unit"].as_str().unwrap_or(""),
        summary["destination"].as_str().unwrap_or("")
    );
    for object in summary["objects"].as_array().map_or(&[][..], Vec::as_slice) {
        let first_error: String = object["first_error"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(100)
            .collect();
        println!(
            "  {}  {} letters  first error: {first_error}",
            object["name"].as_str().unwrap_or(""),
            object["letters"]
        );
    }
    let replay = &summary["replay"];
    if replay.is_object() {
        println!("last replay: {}", replay_line(replay));
    }
}

fn replay_line(replay: &Value) -> String {
    let mut line = format!(
        "{} (version {}): {}/{} letters acknowledged",
        replay["state"].as_str().unwrap_or("?"),
        replay["version"],
        replay["acknowledged"],
        replay["total"]
    );
    if let (Some(rows), Some(again)) =
        (replay["rows_out"].as_u64(), replay["failed_again"].as_u64())
    {
        line.push_str(&format!(
            ", {rows} rows written, {again} failed again (back in the dead letters)"
        ));
    }
    if let Some(error) = replay["error"].as_str() {
        line.push_str(&format!(", error: {error}"));
    }
    line
}

async fn show(spec: &JobSpec, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let listing = read_dead_letters(spec, Some(limit)).await?;
    let letters = listing.objects.iter().flat_map(|object| {
        object.letters.iter().map(
            move |(line, letter)| json!({"object": object.name, "line": line, "letter": letter}),
        )
    });
    if json {
        let letters: Vec<Value> = letters.take(limit).collect();
        let body =
            json!({"job": spec.name, "destination": listing.destination, "letters": letters});
        println!("{body}");
    } else {
        for letter in letters.take(limit) {
            println!("{}", letter["letter"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(spec: &JobSpec, json: bool) -> anyhow::Result<ExitCode> {
    let (source, total) = ReplaySource::open(spec).await?;
    if total == 0 {
        if json {
            println!("{}", json!({"total": 0, "rows_out": 0, "failed_again": 0}));
        }
        eprintln!("no dead letters to replay");
        return Ok(ExitCode::SUCCESS);
    }
    let progress = source.progress();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let done = progress.load(Ordering::Relaxed);
            eprintln!(
                "replaying dead letters: {done}/{total} ({}%)",
                done * 100 / total
            );
        }
    });
    let result = match Job::over(spec, Box::new(source), JobRuntime::for_job(spec)).await {
        Ok(job) => job
            .run(CancellationToken::new())
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error.into()),
    };
    ticker.abort();
    let stats =
        result.with_context(|| format!("replaying the dead letters of job {}", spec.name))?;
    if json {
        let body =
            json!({"total": total, "rows_out": stats.rows_out, "failed_again": stats.dead_letters});
        println!("{body}");
    }
    eprintln!(
        "replayed {total} dead letters: {} rows written, {} failed again (back in the dead letters)",
        stats.rows_out, stats.dead_letters
    );
    Ok(ExitCode::SUCCESS)
}

/// The same verbs against `GET|POST /v1/jobs/{name}/dead-letters…` of a server.
async fn remote_dlq(
    command: DlqCommand,
    server: Option<String>,
    json: bool,
) -> Result<(), ClientError> {
    let client = Client::new(server)?;
    let name = command.job().to_string_lossy().into_owned();
    let base = format!("/v1/jobs/{name}/dead-letters");
    match command {
        DlqCommand::List { .. } => {
            let summary = client.get(&base).await?;
            if json {
                println!("{summary}");
            } else {
                print_summary(&summary);
            }
        }
        DlqCommand::Show { limit, .. } => {
            let limit = limit.clamp(1, 10_000);
            let body = client.get(&format!("{base}/letters?limit={limit}")).await?;
            if json {
                println!("{body}");
            } else {
                for letter in body["letters"].as_array().map_or(&[][..], Vec::as_slice) {
                    println!("{}", letter["letter"]);
                }
            }
        }
        DlqCommand::Replay {
            no_wait, timeout, ..
        } => {
            let started = client
                .call(reqwest::Method::POST, &format!("{base}/replay"), None)
                .await?;
            let finished = if no_wait || started["state"] != "running" {
                started
            } else {
                wait_for_replay(&client, &base, timeout).await?
            };
            if json {
                println!("{finished}");
            } else {
                println!("{name}: replay {}", replay_line(&finished));
            }
            if finished["state"] == "failed" {
                return Err(ClientError::Failed(format!(
                    "the replay failed: {}",
                    finished["error"].as_str().unwrap_or("no reason given")
                )));
            }
        }
    }
    Ok(())
}

/// Polls the job's replay until it is no longer running.
async fn wait_for_replay(
    client: &Client,
    base: &str,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut last_report = Instant::now();
    loop {
        let replay = client.get(&format!("{base}/replay")).await?;
        if replay["state"] != "running" {
            return Ok(replay);
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "replaying dead letters: {}/{}",
                replay["acknowledged"], replay["total"]
            );
            last_report = Instant::now();
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Failed(format!(
                "the replay did not finish within {}s; it goes on on the server",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
