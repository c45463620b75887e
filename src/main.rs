//! `sluice`: the command-line interface. Thin: each subcommand parses its arguments and
//! calls into `sluice-platform`.

mod dlq;
mod head;
mod init;
mod invoke;
mod report;
mod run;
mod validate;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Message-queue-triggered batch/ETL workers that write Parquet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one job in the foreground until SIGINT/SIGTERM (graceful: the open batch is
    /// finished, flushed and committed before exit).
    Run {
        /// The job folder (holds job.toml and the function's files); several folders run
        /// side by side in one process, sharing the node's instance slots fairly.
        #[arg(required = true)]
        job_dirs: Vec<PathBuf>,
        /// Process what is there, then stop (bucket triggers: once a listing finds
        /// nothing new). Broker triggers ignore it.
        #[arg(long)]
        once: bool,
        /// Serve the jobs' status as JSON on /status and Prometheus metrics on /metrics,
        /// e.g. 127.0.0.1:9090.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// Most function instances across all jobs of this process (default: 4 per core).
        #[arg(long, value_name = "N")]
        node_instances: Option<usize>,
    },
    /// Run sample events through the job's function and print the rows that would be
    /// written, without any broker or store.
    Invoke {
        job_dir: PathBuf,
        /// Sample events, read as the job's trigger reads its source: one message payload
        /// per line for Kafka and AMQP, the bucket trigger's format (CSV, JSON arrays,
        /// lines; .gz/.zst) for bucket jobs. Standard input when absent.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Every sample line is an envelope, `{"value", "key", "headers", "timestamp_ms"}`
        /// (jobs with `function.input = "envelope"` recognise such lines anyway).
        #[arg(long)]
        envelopes: bool,
    },
    /// Create a new job folder to start from: job.toml, the function, sample events.
    Init {
        /// The folder to create; its name is the job's name.
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "python")]
        template: init::Template,
    },
    /// Check a job folder's job.toml (the folder or the file itself) and print every
    /// problem found.
    Validate { job_dir: PathBuf },
    /// Print the first rows of a local Parquet file as JSON lines.
    Head {
        file: PathBuf,
        /// How many rows.
        #[arg(long, short = 'n', default_value_t = 10)]
        rows: usize,
    },
    /// Inspect dead letters and replay them through the job.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Before any function runs: keep the platform's environment and memory out of their
    // reach (see docs/function-protocol.md, "Environment"). Commands that run no function
    // skip the host checks this involves.
    let runs_functions = matches!(
        cli.command,
        Command::Run { .. } | Command::Invoke { .. } | Command::Dlq { .. }
    );
    if runs_functions && let Err(error) = sluice_platform::function::harden_platform_process() {
        tracing::warn!(%error, "could not harden the platform process; functions may read its environment");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                job_dirs,
                once,
                http,
                node_instances,
            } => {
                let options = run::RunOptions {
                    once,
                    http,
                    node_instances,
                };
                run::run(&job_dirs, options).await
            }
            Command::Head { file, rows } => head::head(&file, rows),
            Command::Invoke {
                job_dir,
                input,
                envelopes,
            } => invoke::invoke(&job_dir, input.as_deref(), envelopes).await,
            Command::Validate { job_dir } => validate::validate(&job_dir),
            Command::Init { dir, template } => init::init(&dir, template),
            Command::Dlq { command } => dlq::dlq(command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {}", report::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `SLUICE_LOG` (or `RUST_LOG`) sets the filter, default `info`.
fn init_logging() {
    let filter = std::env::var("SLUICE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
