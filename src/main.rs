//! `sluice`: the command-line interface. Thin: each subcommand parses its arguments and
//! calls into `sluice-platform`.

mod allocator;
mod client;
mod deploy;
mod dlq;
mod head;
mod init;
mod invoke;
mod jobs;
mod logs;
mod report;
mod run;
mod serve;
mod validate;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_platform::spec::units::{parse_duration, parse_size};

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
    /// Inspect dead letters and replay them through the job (a job folder here, or a
    /// job on a server).
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
        /// The server whose job is meant (default: SLUICE_SERVER when JOB is not a path
        /// that exists); the token comes from SLUICE_TOKEN.
        #[arg(long, value_name = "URL", global = true)]
        server: Option<String>,
        /// Print JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Run the daemon: a registry of jobs, each run at its version and in its state, and
    /// the HTTP API under /v1 that deploys and controls them.
    Serve {
        /// The embedded registry and the stored bundles.
        #[arg(long, value_name = "DIR", default_value = "./sluice-data")]
        data: PathBuf,
        /// sqlite://PATH or postgres://USER@HOST/DB (default: sqlite in --data).
        #[arg(long, value_name = "URL")]
        registry: Option<String>,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8470")]
        listen: std::net::SocketAddr,
        /// Register (or update) every job folder in DIR at start.
        #[arg(long, value_name = "DIR")]
        jobs: Option<PathBuf>,
        /// Most function instances across all jobs of this process (default: 4 per core).
        #[arg(long, value_name = "N")]
        node_instances: Option<usize>,
        /// API tokens, one `ROLE:TOKEN` or `NAME:ROLE:TOKEN` per line (ROLE admin or
        /// read); default: SLUICE_API_TOKENS. Without tokens only loopback is allowed.
        #[arg(long, value_name = "FILE")]
        tokens: Option<PathBuf>,
        /// Largest bundle, unpacked (and uploaded), e.g. 64MiB.
        #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
        max_bundle_size: u64,
        /// Most files and folders in a bundle.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        max_bundle_entries: usize,
        /// Invocation records older than this are deleted, e.g. 7d.
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
        invocation_max_age: Duration,
        /// Invocation records kept per job at most (the newest).
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        invocation_max_count: i64,
    },
    /// Validate a job folder, upload it to a server as the job's next version and wait
    /// until it runs.
    Deploy {
        job_dir: PathBuf,
        /// The server (default: SLUICE_SERVER, else http://127.0.0.1:8470); the token
        /// comes from SLUICE_TOKEN.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Return once uploaded.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the version to run, e.g. 2m.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// A job's newest batch attempts on a server (as `sluice jobs invocations NAME`).
    Invocations {
        name: String,
        /// How many, newest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A job's function stderr lines on a server, with instance and batch.
    Logs {
        name: String,
        /// Keep printing new lines until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// How many of the newest lines to print first.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Print the API's JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List and control the jobs of a server.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
        /// The server (default: SLUICE_SERVER, else http://127.0.0.1:8470); the token
        /// comes from SLUICE_TOKEN.
        #[arg(long, value_name = "URL", global = true)]
        server: Option<String>,
        /// Print the API's JSON instead of tables.
        #[arg(long, global = true)]
        json: bool,
    },
}

fn main() -> ExitCode {
    allocator::limit_arenas();
    let cli = Cli::parse();
    init_logging();
    // Before any function runs: keep the platform's environment and memory out of their
    // reach (see docs/function-protocol.md, "Environment"). Commands that run no function
    // skip the host checks this involves.
    let runs_functions = matches!(
        cli.command,
        Command::Run { .. } | Command::Invoke { .. } | Command::Dlq { .. } | Command::Serve { .. }
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
            Command::Dlq {
                command,
                server,
                json,
            } => dlq::dlq(command, server, json).await,
            Command::Serve {
                data,
                registry,
                listen,
                jobs,
                node_instances,
                tokens,
                max_bundle_size,
                max_bundle_entries,
                invocation_max_age,
                invocation_max_count,
            } => {
                let options = serve::ServeOptions {
                    data,
                    registry,
                    listen,
                    jobs,
                    node_instances,
                    tokens,
                    limits: sluice_platform::control::bundle::BundleLimits {
                        max_unpacked_bytes: max_bundle_size,
                        max_entries: max_bundle_entries,
                    },
                    retention: sluice_platform::control::invocations::InvocationRetention {
                        max_age: invocation_max_age,
                        max_per_job: invocation_max_count,
                    },
                };
                serve::serve(options).await
            }
            Command::Deploy {
                job_dir,
                server,
                json,
                no_wait,
                timeout,
            } => {
                let options = deploy::DeployOptions {
                    server,
                    json,
                    no_wait,
                    timeout,
                };
                deploy::deploy(&job_dir, options).await
            }
            Command::Jobs {
                command,
                server,
                json,
            } => jobs::jobs(command, server, json).await,
            Command::Invocations {
                name,
                limit,
                server,
                json,
            } => jobs::jobs(jobs::JobsCommand::Invocations { name, limit }, server, json).await,
            Command::Logs {
                name,
                follow,
                limit,
                server,
                json,
            } => logs::logs(name, follow, limit, server, json).await,
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
