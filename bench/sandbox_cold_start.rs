//! What the function sandbox's user and namespaces add to a cold start: the time from
//! starting a stream instance to its readiness line `{"$ready": true}`
//! (`FunctionOutput::init_time`), with and without the job's own user
//! (`FunctionRunner::with_job_user`), for a spawned `sh` function and for a Python one
//! forked from its preload process (`function.preload = ["json"]`).
//!
//! ```sh
//! cargo run --profile perf --example sandbox_cold_start -- [STARTS]   # optimised
//! cargo run --example sandbox_cold_start -- [STARTS]                  # debug build
//! ```
//!
//! Run it as root: "with" is then the job's own user, its staged bundle, a mount and a
//! PID namespace per instance (for a preloaded instance, made by its preload process in
//! a user namespace of its own); "without" runs instances as the platform's user in the
//! job folder. Cgroups, the network namespace, rlimits, dropped capabilities and the
//! system call filter are on in both. Each setting runs twice, interleaved (without,
//! with, without, with), each run a first `invoke` and then STARTS times (default 300)
//! `shutdown` and `invoke`: a cold start. Prints p50/p90/max per run, then what "with"
//! adds per instance start (p10, p50 and p90 of each "with" run minus those of the
//! "without" run before it), the build profile, and the load average before and after
//! (`/proc/loadavg`): on a busy machine the spread is mostly scheduling, and p10 comes
//! closest to what the work itself costs.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use sluice_connectors::{Event, Origin};
use sluice_platform::function::{FunctionOutput, FunctionRunner, encode_batch};
use sluice_platform::spec::{InputMode, load_job};

/// The `sh` function: ready at once, an empty line back for each batch.
const SH: &str = r#"echo '{"$ready": true}'; while read -r line; do [ -z "$line" ] && echo; done"#;

/// The Python function: the same, as a script.
const PYTHON: &str = r#"
import json, sys
print(json.dumps({"$ready": True}), flush=True)
for line in sys.stdin:
    if not line.strip():
        print(flush=True)
"#;

/// The Python interpreter itself when every user may run it (a job's user cannot enter
/// root's home, where pyenv keeps one), else the system's.
fn python() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let found = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    let open_to_all = found.ancestors().skip(1).all(|dir| {
        std::fs::metadata(dir).is_ok_and(|metadata| metadata.permissions().mode() & 0o001 != 0)
    });
    if open_to_all {
        found.display().to_string()
    } else {
        "/usr/bin/python3".to_owned()
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// `starts` cold starts of the job `name` in `dir`, after a first start.
async fn measure(
    name: &str,
    dir: &Path,
    command: &[String],
    preload: bool,
    job_user: bool,
    starts: usize,
) -> Vec<Duration> {
    let preload = if preload {
        "preload = [\"json\"]\n"
    } else {
        ""
    };
    let toml = format!(
        "name = \"{name}\"\n[trigger.kafka]\nbrokers = \"localhost:9092\"\ntopic = \"t\"\n\
         [function]\ncommand = {command:?}\nmode = \"stream\"\n{preload}\
         [output]\nurl = \"out\"\nschema = {{ v = \"int64\" }}\n"
    );
    std::fs::write(dir.join("job.toml"), toml).unwrap();
    let job = load_job(dir).unwrap_or_else(|errors| panic!("{errors}"));
    let event = Event::from_payload(Bytes::from_static(b"{\"v\":1}"), Origin::Sample { line: 1 });
    let batch = encode_batch(&[event], InputMode::Value);
    let mut runner = FunctionRunner::new(name, &job.dir, &job.function).with_job_user(job_user);
    let init = |output: FunctionOutput| output.init_time.expect("the function announces readiness");
    init(runner.invoke(&batch).await.unwrap());
    let mut samples = Vec::with_capacity(starts);
    for _ in 0..starts {
        runner.shutdown().await;
        samples.push(init(runner.invoke(&batch).await.unwrap()));
    }
    runner.shutdown().await;
    samples.sort_unstable();
    samples
}

#[tokio::main]
async fn main() {
    sluice_platform::function::harden_platform_process().unwrap();
    let starts: usize = std::env::args()
        .nth(1)
        .map_or(300, |arg| arg.parse().expect("STARTS is a number"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("function.py"), PYTHON).unwrap();
    let spawned: Vec<String> = vec!["sh".into(), "-c".into(), SH.into()];
    let preloaded: Vec<String> = vec![python(), "function.py".into()];
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "optimised"
    };
    println!("build: {profile}; load average before: {}", load_average());
    println!("| instances | job user and namespaces | p50 | p90 | max | starts |");
    println!("|---|---|---|---|---|---|");
    let mut added = Vec::new();
    for (instances, command, preload) in [
        ("spawned", &spawned, false),
        ("preloaded", &preloaded, true),
    ] {
        let mut without = [Duration::ZERO; 3];
        for (round, job_user) in [false, true, false, true].into_iter().enumerate() {
            let name = format!("sandbox-cold-{instances}-{round}");
            let samples = measure(&name, dir.path(), command, preload, job_user, starts).await;
            let quantiles = [0.10, 0.50, 0.90].map(|fraction| percentile(&samples, fraction));
            let [_, p50, p90] = quantiles;
            println!(
                "| {instances} | {} | {} | {} | {} | {} |",
                if job_user { "with" } else { "without" },
                ms(p50),
                ms(p90),
                ms(*samples.last().unwrap()),
                samples.len(),
            );
            if job_user {
                added.push(format!(
                    "{instances} run {}: {} at p10, {} at p50, {} at p90",
                    round / 2 + 1,
                    signed_ms(quantiles[0], without[0]),
                    signed_ms(quantiles[1], without[1]),
                    signed_ms(quantiles[2], without[2]),
                ));
            } else {
                without = quantiles;
            }
        }
    }
    println!("added per instance start by the job's user and namespaces (goal: at most +5 ms):");
    for line in added {
        println!("  {line}");
    }
    println!("build: {profile}; load average after: {}", load_average());
}

/// `with - without` in milliseconds, with its sign.
fn signed_ms(with: Duration, without: Duration) -> String {
    format!(
        "{:+.2} ms",
        (with.as_secs_f64() - without.as_secs_f64()) * 1000.0
    )
}
