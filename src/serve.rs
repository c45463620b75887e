//! `sluice serve`: the daemon. Runs every job of its registry in its state and serves the
//! control API (see `sluice_platform::control`).
//!
//! Start: open (and migrate) the registry, register the folders of `--jobs DIR`, start
//! every job at its version and state, then listen. SIGTERM or SIGINT: drain every job
//! (stop intake, finish in-flight batches, commit), then stop the API and exit 0; the
//! registry is left as it was, so the next start brings every job back. A second signal
//! exits at once (uncommitted positions are redelivered on the next start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use sluice_platform::control::api::{ApiState, router};
use sluice_platform::control::auth::Tokens;
use sluice_platform::control::bundle::{Bundle, BundleLimits, BundleStore, pack_folder};
use sluice_platform::control::invocations::{InvocationRecorder, InvocationRetention};
use sluice_platform::control::registry::Registry;
use sluice_platform::control::supervisor::{Supervisor, SupervisorContext};
use sluice_platform::pool::node::NodeCapacity;
use sluice_platform::spec::JOB_FILE;
use sluice_platform::spec::secret::redact_userinfo;
use sluice_platform::status::StatusBoard;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The command line's options for `serve`.
pub struct ServeOptions {
    pub data: PathBuf,
    pub registry: Option<String>,
    pub listen: SocketAddr,
    pub jobs: Option<PathBuf>,
    pub node_instances: Option<usize>,
    pub tokens: Option<PathBuf>,
    pub limits: BundleLimits,
    pub retention: InvocationRetention,
}

pub async fn serve(options: ServeOptions) -> anyhow::Result<ExitCode> {
    let tokens = load_tokens(options.tokens.as_deref())?;
    if tokens.is_empty() && !options.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without tokens: give --tokens FILE or SLUICE_API_TOKENS, \
             or listen on a loopback address",
            options.listen
        );
    }
    std::fs::create_dir_all(&options.data)
        .with_context(|| format!("creating the data folder {}", options.data.display()))?;
    let data = std::path::absolute(&options.data).unwrap_or(options.data.clone());
    let url = options
        .registry
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("registry.db").display()));
    let registry = Registry::open(&url).await?;
    info!(
        registry = %redact_userinfo(&url),
        schema = registry.schema_version().await?,
        "registry open"
    );
    let store = BundleStore::new(&data, options.limits);
    if let Some(dir) = &options.jobs {
        register_folders(&registry, &store, dir).await?;
    }
    let recorder_stop = CancellationToken::new();
    let (invocations, recorder) =
        InvocationRecorder::spawn(registry.clone(), options.retention, recorder_stop.clone());
    let supervisor = Supervisor::new(SupervisorContext {
        registry,
        store,
        board: StatusBoard::new(),
        node: NodeCapacity::global(options.node_instances),
        invocations,
        logs: Arc::default(),
    });
    let shutdown = CancellationToken::new();
    crate::run::spawn_signal_handler(shutdown.clone())?;
    // The jobs run inside `run_jobs`, polled here beside the API until every job drained.
    let (served, ()) = tokio::join!(
        serve_api(&supervisor, tokens, &options, shutdown),
        supervisor.run_jobs()
    );
    recorder_stop.cancel();
    if let Err(error) = recorder.await {
        warn!(%error, "the invocation writer failed");
    }
    served?;
    supervisor.context().registry.close().await;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Starts the jobs, serves the API until `shutdown`, then drains every job and stops the
/// API.
async fn serve_api(
    supervisor: &Arc<Supervisor>,
    tokens: Tokens,
    options: &ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = supervisor.start_all().await;
    if let Err(error) = started {
        supervisor.shutdown().await;
        return Err(error.into());
    }
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            supervisor.shutdown().await;
            return Err(error).with_context(|| format!("listening on {}", options.listen));
        }
    };
    let bound = listener.local_addr()?;
    let body_limit = usize::try_from(options.limits.max_unpacked_bytes).unwrap_or(usize::MAX);
    let app = router(
        ApiState {
            supervisor: Arc::clone(supervisor),
            tokens: Arc::new(tokens),
        },
        body_limit,
    );
    let http_stop = CancellationToken::new();
    let http = tokio::spawn({
        let http_stop = http_stop.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await
        }
    });
    info!(addr = %bound, "serving the api on http://{bound}/v1");
    shutdown.cancelled().await;
    info!("stopping: draining every job, then the api");
    supervisor.shutdown().await;
    http_stop.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "the api stopped with an error"),
        Err(error) => warn!(%error, "the api task failed"),
    }
    Ok(())
}

/// Tokens from `--tokens FILE`, else `SLUICE_API_TOKENS`, else none.
fn load_tokens(file: Option<&Path>) -> anyhow::Result<Tokens> {
    let (text, origin) = match file {
        Some(file) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the token file {}", file.display()))?,
            file.display().to_string(),
        ),
        None => (
            std::env::var("SLUICE_API_TOKENS").unwrap_or_default(),
            "SLUICE_API_TOKENS".to_owned(),
        ),
    };
    Tokens::parse(&text).with_context(|| format!("reading tokens from {origin}"))
}

/// Registers (or updates) every job folder directly under `dir`, the docker-compose way:
/// an unchanged folder keeps its version and state.
async fn register_folders(
    registry: &Registry,
    store: &BundleStore,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the jobs folder {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join(JOB_FILE).is_file())
        .collect();
    folders.sort();
    for folder in folders {
        let packed = pack_folder(&folder)
            .with_context(|| format!("packing the job folder {}", folder.display()))?;
        let bundle = Bundle::read(&packed, store.limits)
            .with_context(|| format!("job folder {}", folder.display()))?;
        let spec = bundle
            .validate(&store.version_dir(&bundle.sha256), None)
            .map_err(|error| match error {
                sluice_platform::control::bundle::BundleError::InvalidSpec(errors) => {
                    anyhow::anyhow!("job folder {}:\n{errors}", folder.display())
                }
                other => anyhow::anyhow!("job folder {}: {other}", folder.display()),
            })?;
        store.store(&bundle)?;
        let deployed = registry
            .deploy(&spec.name, &bundle.sha256, "serve --jobs")
            .await?;
        info!(job = %spec.name, version = deployed.version, changed = deployed.changed, folder = %folder.display(), "registered job folder");
    }
    Ok(())
}
