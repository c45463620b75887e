//! `sluice run JOB_DIR...`: jobs in the foreground, no daemon.
//!
//! Before a job's trigger connects, recovery finishes any range a crash left unfinished
//! and moves the group's offsets up to the committed output (exactly-once Kafka output).
//! Several job folders run side by side, sharing the node's instance slots fairly
//! (`--node-instances`); `--http ADDR` serves their status on `/status` and `/metrics`.
//!
//! SIGINT or SIGTERM starts a graceful stop (stop intake, finish the open batches, flush,
//! commit, exit 0); a second signal exits at once without committing (nothing is lost:
//! uncommitted positions are redelivered on the next start).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use sluice_platform::pipeline::{Job, JobRuntime};
use sluice_platform::pool::node::NodeCapacity;
use sluice_platform::spec::{JobSpec, load_job};
use sluice_platform::status::{StatusBoard, http};
use sluice_platform::trigger::ConnectOptions;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::report::error_chain;

/// The command line's options for `run`.
pub struct RunOptions {
    pub once: bool,
    pub http: Option<SocketAddr>,
    pub node_instances: Option<usize>,
}

pub async fn run(job_dirs: &[PathBuf], options: RunOptions) -> anyhow::Result<ExitCode> {
    let mut specs = Vec::new();
    for dir in job_dirs {
        match load_job(dir) {
            Ok(spec) => specs.push(spec),
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if let Some(duplicate) = duplicate_name(&specs) {
        anyhow::bail!("two job folders name the same job {duplicate:?}; job names must be unique");
    }
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let node = NodeCapacity::global(options.node_instances);
    let board = StatusBoard::new();
    let http_stop = CancellationToken::new();
    if let Some(addr) = options.http {
        if !addr.ip().is_loopback() {
            warn!(%addr, "the status endpoint listens beyond loopback without authentication; anyone who can reach it reads /status and /metrics");
        }
        let bound = http::serve(Arc::clone(&board), addr, http_stop.clone())
            .await
            .with_context(|| format!("serving the status endpoint on {addr}"))?;
        info!(addr = %bound, "status on /status and /metrics");
    }
    let jobs = specs.iter().map(|spec| {
        let status = board.job(&spec.name);
        let missing = sluice_platform::function::missing_protections(&spec.function);
        if !missing.is_empty() {
            warn!(job = %spec.name, isolation = ?spec.function.isolation, missing = ?missing, "the function lacks protections on this host");
        }
        status.update(|status| status.missing_protections = missing);
        let runtime = JobRuntime {
            node: Arc::clone(&node),
            status,
            observer: None,
        };
        run_one(spec, options.once, shutdown.clone(), runtime)
    });
    let results = futures::future::join_all(jobs).await;
    http_stop.cancel();
    let mut failed = 0;
    for (spec, result) in specs.iter().zip(results) {
        if let Err(error) = result {
            failed += 1;
            if specs.len() == 1 {
                return Err(error);
            }
            error!(job = %spec.name, "{}", error_chain(&error));
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_one(
    spec: &JobSpec,
    once: bool,
    shutdown: CancellationToken,
    runtime: JobRuntime,
) -> anyhow::Result<()> {
    info!(job = %spec.name, dir = %spec.dir.display(), output = %spec.redact(&spec.output.url), "starting job");
    // Errors leave here as one line, each cause once, with the job's secrets masked.
    let shown = |error: anyhow::Error| anyhow::anyhow!("{}", spec.redact(&error_chain(&error)));
    let job = Job::open(
        spec,
        runtime,
        ConnectOptions {
            stop_when_idle: once,
        },
    )
    .await
    .with_context(|| format!("job {}", spec.name))
    .map_err(shown)?;
    let stats = job
        .run(shutdown)
        .await
        .with_context(|| format!("job {}", spec.name))
        .map_err(shown)?;
    info!(job = %spec.name, records = stats.records_in, rows = stats.rows_out, files = stats.files, "done");
    Ok(())
}

fn duplicate_name(specs: &[JobSpec]) -> Option<&str> {
    let mut names: Vec<&str> = specs.iter().map(|spec| spec.name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// SIGINT/SIGTERM drain (the first cancels `shutdown`); a second one exits at once.
pub(crate) fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
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
                info!("stopping: finishing the open batches, then flushing and committing");
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
