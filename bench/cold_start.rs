//! Cold starts of a stream-mode Python function: the time from starting an instance to its
//! readiness line `{"$ready": true}` (`FunctionOutput::init_time`), for a trivial function
//! and for one that imports pyarrow, each spawned afresh and forked from a preloaded
//! parent (`function.preload`, the zygote).
//!
//! ```sh
//! cargo run --release --example cold_start -- [STARTS]
//! ```
//!
//! pyarrow comes from a virtual environment under `target/bench-venv`, created with
//! `python3 -m venv` and `pip install pyarrow` (from PyPI) on the first run when it does not
//! import there yet. Each case runs one job through the platform's public API: a first
//! `invoke` (with preload, it also starts the zygote and pays the imports once), then STARTS
//! times (default 50) `shutdown` (the warm instance is stopped) and `invoke` (a new
//! instance: a cold start). Prints p50/p99/max of those cold starts, and the first start.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use sluice_connectors::{Event, Origin};
use sluice_platform::function::{FunctionRunner, encode_batch};
use sluice_platform::spec::{InputMode, load_job};

const TRIVIAL: &str = r#"
import json, sys
print(json.dumps({"$ready": True}), flush=True)
for line in sys.stdin:
    if not line.strip():
        print(flush=True)
"#;

const PYARROW: &str = r#"
import json, sys
import pyarrow, pyarrow.parquet
print(json.dumps({"$ready": True}), flush=True)
for line in sys.stdin:
    if not line.strip():
        print(flush=True)
"#;

/// The venv's interpreter, made (with pyarrow installed) if pyarrow does not import there.
fn pyarrow_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/bench-venv");
    let python = venv.join("bin/python3");
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", "import pyarrow"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !imports(&python) {
        eprintln!(
            "creating {} with pyarrow (pip install pyarrow)",
            venv.display()
        );
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(created.success(), "python3 -m venv failed");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "pyarrow"])
            .status()
            .unwrap();
        assert!(installed.success(), "pip install pyarrow failed");
        assert!(
            imports(&python),
            "pyarrow does not import after installing it"
        );
    }
    python
}

struct Figures {
    first: Duration,
    starts: Vec<Duration>,
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Runs one job: a first start, then `starts` cold starts.
async fn measure(
    name: &str,
    python: &Path,
    script: &str,
    preload: &[&str],
    starts: usize,
) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("function.py"), script).unwrap();
    let preload = if preload.is_empty() {
        String::new()
    } else {
        format!("preload = {preload:?}\n")
    };
    let toml = format!(
        "name = \"{name}\"\n[trigger.kafka]\nbrokers = \"localhost:9092\"\ntopic = \"t\"\n\
         [function]\ncommand = [{:?}, \"function.py\"]\nmode = \"stream\"\n{preload}\
         [output]\nurl = \"out\"\nschema = {{ v = \"int64\" }}\n",
        python.display().to_string()
    );
    std::fs::write(dir.path().join("job.toml"), toml).unwrap();
    let job = load_job(dir.path()).unwrap_or_else(|errors| panic!("{errors}"));
    let event = Event::from_payload(Bytes::from_static(b"{\"v\":1}"), Origin::Sample { line: 1 });
    let batch = encode_batch(&[event], InputMode::Value);
    let mut runner = FunctionRunner::new(name, &job.dir, &job.function);
    let init = |output: sluice_platform::function::FunctionOutput| {
        output.init_time.expect("the function announces readiness")
    };
    let first = init(runner.invoke(&batch).await.unwrap());
    let mut samples = Vec::with_capacity(starts);
    for _ in 0..starts {
        runner.shutdown().await;
        samples.push(init(runner.invoke(&batch).await.unwrap()));
    }
    runner.shutdown().await;
    Figures {
        first,
        starts: samples,
    }
}

#[tokio::main]
async fn main() {
    sluice_platform::function::harden_platform_process().unwrap();
    let starts: usize = std::env::args()
        .nth(1)
        .map_or(50, |arg| arg.parse().expect("STARTS is a number"));
    // The interpreter itself: `python3` on PATH may be a wrapper script (pyenv).
    let executable = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let system_python = PathBuf::from(String::from_utf8(executable.stdout).unwrap().trim());
    let venv_python = pyarrow_python();
    let cases: [(&str, &str, &Path, &str, &[&str]); 4] = [
        ("trivial", "spawned", &system_python, TRIVIAL, &[]),
        (
            "trivial",
            "preload json",
            &system_python,
            TRIVIAL,
            &["json"],
        ),
        ("pyarrow", "spawned", &venv_python, PYARROW, &[]),
        (
            "pyarrow",
            "preload pyarrow, pyarrow.parquet",
            &venv_python,
            PYARROW,
            &["pyarrow", "pyarrow.parquet"],
        ),
    ];
    println!("| function | instances | first start | cold start p50 | p99 | max | starts |");
    println!("|---|---|---|---|---|---|---|");
    for (index, (function, how, python, script, preload)) in cases.into_iter().enumerate() {
        let name = format!("cold-start-{index}");
        let mut figures = measure(&name, python, script, preload, starts).await;
        figures.starts.sort_unstable();
        println!(
            "| {function} | {how} | {} | {} | {} | {} | {} |",
            ms(figures.first),
            ms(percentile(&figures.starts, 0.50)),
            ms(percentile(&figures.starts, 0.99)),
            ms(*figures.starts.last().unwrap()),
            figures.starts.len(),
        );
    }
}
