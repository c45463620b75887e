//! `sluice run JOB_DIR`: one job in the foreground.
//!
//! Before the trigger connects, recovery finishes any range a crash left unfinished and
//! moves the group's offsets up to the committed output (exactly-once Kafka output).
//!
//! SIGINT or SIGTERM starts a graceful stop (stop intake, finish the open batch, flush,
//! commit, exit 0); a second signal exits at once without committing (nothing is lost:
//! uncommitted positions are redelivered on the next start).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use sluice_platform::commit::recover;
use sluice_platform::pipeline::run_job;
use sluice_platform::spec::load_job;
use sluice_platform::trigger::{ConnectOptions, connect_source_with};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub async fn run(job_dir: &Path, once: bool) -> anyhow::Result<ExitCode> {
    let spec = match load_job(job_dir) {
        Ok(spec) => spec,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    info!(job = %spec.name, dir = %spec.dir.display(), output = %spec.output.url, "starting job");
    let recovered = recover(&spec)
        .await
        .with_context(|| format!("job {}: recovering unfinished output", spec.name))?;
    if !recovered.redone.is_empty() {
        info!(job = %spec.name, ranges = ?recovered.redone, "finished ranges an earlier run left unfinished");
    }
    let source = connect_source_with(
        &spec,
        ConnectOptions {
            stop_when_idle: once,
        },
    )
    .await
    .with_context(|| format!("job {}: connecting the trigger", spec.name))?;
    let stats = run_job(&spec, source, shutdown)
        .await
        .with_context(|| format!("job {}", spec.name))?;
    info!(job = %spec.name, records = stats.records_in, rows = stats.rows_out, files = stats.files, "done");
    Ok(ExitCode::SUCCESS)
}

fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            signals += 1;
            if signals == 1 {
                info!("stopping: finishing the open batch, then flushing and committing");
                shutdown.cancel();
            } else {
                warn!(
                    "second signal: exiting now without committing; uncommitted positions are redelivered on the next start"
                );
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
