//! `sluice dlq list|show|replay JOB_DIR`: inspect dead letters and run them through the
//! job again.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use sluice_platform::deadletter::replay::{ReplaySource, read_dead_letters};
use sluice_platform::pipeline::{Job, JobRuntime};
use sluice_platform::spec::{JobSpec, load_job};
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One line per dead-letter object (or topic partition, or queue): name, letters,
    /// first error. Changes nothing.
    List { job_dir: std::path::PathBuf },
    /// Print the dead letters as JSON lines. Changes nothing.
    Show {
        job_dir: std::path::PathBuf,
        /// Print at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Run every dead letter through the job's function again and write the output; once
    /// its output is durable a replayed letter leaves the pending set (its object moves
    /// under `replayed/`; its topic offset is committed; its queue message is acked).
    Replay { job_dir: std::path::PathBuf },
}

pub async fn dlq(command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { job_dir } => list(&job(&job_dir)?).await,
        DlqCommand::Show { job_dir, limit } => show(&job(&job_dir)?, limit).await,
        DlqCommand::Replay { job_dir } => replay(&job(&job_dir)?).await,
    }
}

fn job(job_dir: &Path) -> anyhow::Result<JobSpec> {
    load_job(job_dir).map_err(|errors| anyhow::anyhow!("{errors}"))
}

async fn list(spec: &JobSpec) -> anyhow::Result<ExitCode> {
    let listing = read_dead_letters(spec, None).await?;
    println!(
        "{} dead letters in {} {} at {}",
        listing.total(),
        listing.objects.len(),
        listing.unit,
        listing.destination
    );
    for object in &listing.objects {
        let first_error = object
            .letters
            .first()
            .and_then(|(_, l)| l.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or("");
        let shown: String = first_error.chars().take(100).collect();
        println!(
            "  {}  {} letters  first error: {shown}",
            object.name,
            object.letters.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(spec: &JobSpec, limit: usize) -> anyhow::Result<ExitCode> {
    let listing = read_dead_letters(spec, Some(limit)).await?;
    for (_, letter) in listing.objects.iter().flat_map(|o| &o.letters).take(limit) {
        println!("{letter}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(spec: &JobSpec) -> anyhow::Result<ExitCode> {
    let (source, total) = ReplaySource::open(spec).await?;
    if total == 0 {
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
    eprintln!(
        "replayed {total} dead letters: {} rows written, {} failed again (back in the dead letters)",
        stats.rows_out, stats.dead_letters
    );
    Ok(ExitCode::SUCCESS)
}
