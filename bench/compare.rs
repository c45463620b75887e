//! The comparison benchmark: Sluice against the programs a user would write without it,
//! on the same Kafka topic, in one invocation.
//!
//! ```sh
//! scripts/services.sh start && eval "$(scripts/services.sh env)"
//! bench/compare.sh [EVENTS] [RUNS] [AMQP_EVENTS]   # builds, makes the venv, runs this
//! ```
//!
//! EVENTS (default 1,000,000) JSON events of ~285 bytes and 10 columns go to a
//! 4-partition topic once; then each program consumes the whole topic under its own
//! consumer group, writes Parquet to a local folder and commits. Time runs from starting
//! the program to its group's committed offsets reaching the end of every partition, so
//! start-up and the group join are in it; "after the join" counts from when the program
//! says on stderr that its partitions are assigned (seen every 100 ms) — from about the
//! first message fetched, the issue's measure: the join is a wait the broker imposes on
//! every consumer alike (3 s here), which would hide how fast each one is. Each program runs RUNS times (default 1); the
//! table shows the median. Peak RSS is the largest sum of resident memory over the
//! program's whole process tree (the platform plus its function instances), sampled every
//! 100 ms, and "instances" the most Python processes seen in it at once (for Sluice, its
//! function instances). "CPU µs/msg" is the tree's user and system time up to the last
//! commit (reaped children included, the broker's not), per message: a second view of a
//! program's own cost when the broker's state moves the wall-clock figures.
//! `COMPARE_ONLY=TEXT` runs only the programs whose name contains TEXT (or one of several
//! texts separated by `|`), and the bare limit;
//! `SLUICE_TEST_BINARY` runs another `sluice` binary (to compare builds), and
//! `COMPARE_BUILDS=LABEL=PATH,LABEL=PATH` runs every selected Sluice program once per
//! listed `sluice` binary, each as its own row (`… [LABEL]`). Runs are interleaved: run 1
//! of every program, then run 2 of every program, and so on, so builds compared A/B see
//! the same machine load and the same topic. The AMQP comparison runs the first build.
//!
//! Programs: the bare limit (`bare_kafka_parquet`: rdkafka → arrow-json → zstd Parquet →
//! commit); hand-written Python (`bench/python/kafka_consumer.py`: confluent-kafka → json
//! or orjson → pyarrow → zstd Parquet, and with a per-record transform adding a column);
//! Sluice with `cat` (stream mode, NDJSON: the platform's own cost), with the same
//! per-record transform as a stream-mode NDJSON function written by hand
//! (`bench/python/sluice_records.py`) and written with the Python SDK's `@records`
//! (`bench/python/sluice_sdk_records.py`; at the default `max_instances = 1`, and with
//! `max_instances = 4` so the autoscaler picks the count), and with a vectorised pyarrow
//! function over `encoding = "arrow"`.
//!
//! Then AMQP (AMQP_EVENTS, default 50,000; 0 skips it): the same events, persistent, on a
//! fresh queue per program; a hand-written pika consumer (`bench/python/amqp_consumer.py`:
//! prefetch 10,000, json.loads → pyarrow → zstd Parquet per 10,000 messages, one
//! multiple-ack) against Sluice with `cat` in stream mode at default settings. Time runs to
//! the pika program's exit after its last ack, and for Sluice to the queue being empty
//! with every row in committed Parquet files.

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "events.rs"]
mod events;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use events::event;

const SCHEMA: &str = r#"{ event_id = "utf8 not null", user_id = "int64", session_id = "utf8", action = "utf8", url = "utf8", referrer = "utf8", country = "utf8", device = "utf8", amount = "float64", ts = "timestamp_ms" }"#;
const SCHEMA_WITH_LENGTH: &str = r#"{ event_id = "utf8 not null", user_id = "int64", session_id = "utf8", action = "utf8", url = "utf8", referrer = "utf8", country = "utf8", device = "utf8", amount = "float64", ts = "timestamp_ms", url_length = "int64" }"#;

/// Starts a program for a consumer group, in a run directory.
type Starter<'a> = Box<dyn Fn(&str, &Path) -> Child + 'a>;

struct Measured {
    seconds: f64,
    /// Seconds from the start until the group had finished joining (its consumers fetch
    /// from then on), when the broker said so.
    joined_after: Option<f64>,
    peak_rss_kib: u64,
    /// CPU time of the program's process tree (its function instances included) up to
    /// the end of the run.
    cpu_seconds: f64,
    /// The most Python processes in the program's tree at once.
    peak_pythons: usize,
}

impl Measured {
    /// Seconds from the end of the group join to the last commit.
    fn after_join(&self) -> Option<f64> {
        self.joined_after.map(|joined| self.seconds - joined)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("EVENTS is a number"));
    let runs: usize = args
        .next()
        .map_or(1, |a| a.parse().expect("RUNS is a number"));
    let amqp_events: usize = args
        .next()
        .map_or(50_000, |a| a.parse().expect("AMQP_EVENTS is a number"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let env = env();
    let root = repo_root();
    let python = root.join("target/py-venv/bin/python3");
    if !python.exists() {
        // Only the Python programs need it; `COMPARE_ONLY` may leave them out.
        eprintln!(
            "{} is missing (bench/compare.sh makes it): the Python programs will fail",
            python.display()
        );
    }
    // This program is an example itself: the bare baseline is built beside it.
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let work = tempfile::tempdir().unwrap();

    let topic = unique("compare");
    runtime.block_on(create_topic(&env, &topic, 4));
    let payloads: Vec<(String, String)> = (0..events)
        .map(|i| (format!("user-{}", i % 100_003), event(i)))
        .collect();
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let ends = runtime.block_on(produce(&env, &topic, &payloads));
    drop(payloads);
    println!(
        "{events} events of {:.0} bytes on 4 partitions of topic {topic}; median of {runs}\n",
        bytes as f64 / events as f64
    );

    let consumer = root.join("bench/python/kafka_consumer.py");
    let script = |name: &str| root.join("bench/python").join(name).display().to_string();
    let python_command = |name: &str| {
        format!(
            "command = [{:?}, {:?}]",
            python.display().to_string(),
            script(name)
        )
    };
    let builds = sluice_builds();
    let sluice_row = |name: &str, function: String, schema: &str, tables: &str| {
        builds
            .iter()
            .map(|(label, binary)| {
                let name = match label {
                    Some(label) => format!("{name} [{label}]"),
                    None => name.to_owned(),
                };
                let starter = sluice_job(&env, &topic, &function, schema, tables, binary);
                (name, starter)
            })
            .collect::<Vec<_>>()
    };
    let mut programs: Vec<(String, Starter<'_>)> = vec![
        (
            "bare Rust: rdkafka → arrow-json → zstd Parquet, one file, commit".to_owned(),
            Box::new(|group, dir| {
                Command::new(examples.join("bare_kafka_parquet"))
                    .args([&env.brokers, &topic, group])
                    .arg(dir.join("out.parquet"))
                    .arg(events.to_string())
                    .stderr(program_log(dir))
                    .spawn()
                    .unwrap()
            }),
        ),
        (
            "hand-written Python: confluent-kafka → json.loads → pyarrow".to_owned(),
            python_consumer(&python, &consumer, &env, &topic, events, "json"),
        ),
        (
            "hand-written Python, orjson".to_owned(),
            python_consumer(&python, &consumer, &env, &topic, events, "orjson"),
        ),
        (
            "hand-written Python + per-record transform (adds a column)".to_owned(),
            python_consumer(&python, &consumer, &env, &topic, events, "transform"),
        ),
    ];
    programs.extend(sluice_row(
        "Sluice, `cat` in stream mode (NDJSON)",
        r#"command = ["cat"]"#.to_owned(),
        SCHEMA,
        "",
    ));
    programs.extend(sluice_row(
        "Sluice, per-record Python transform written by hand, stream mode, 1 instance",
        python_command("sluice_records.py"),
        SCHEMA_WITH_LENGTH,
        "",
    ));
    programs.extend(sluice_row(
        "Sluice, per-record Python function with the SDK (`@records`), 1 instance",
        python_command("sluice_sdk_records.py"),
        SCHEMA_WITH_LENGTH,
        "",
    ));
    programs.extend(sluice_row(
        "Sluice, per-record Python function with the SDK, `max_instances = 4`",
        python_command("sluice_sdk_records.py"),
        SCHEMA_WITH_LENGTH,
        "[scaling]\nmax_instances = 4",
    ));
    programs.extend(sluice_row(
        "Sluice, vectorised pyarrow function, encoding = \"arrow\"",
        format!(
            "{}\nencoding = \"arrow\"",
            python_command("sluice_arrow.py")
        ),
        SCHEMA_WITH_LENGTH,
        "",
    ));

    // COMPARE_ONLY=TEXT|TEXT keeps the programs whose name contains one of the texts (and
    // the bare limit).
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default();
    let selected: Vec<&(String, Starter<'_>)> = programs
        .iter()
        .enumerate()
        .filter(|(index, (name, _))| *index == 0 || only.split('|').any(|text| name.contains(text)))
        .map(|(_, program)| program)
        .collect();
    // Interleaved: each round runs every selected program once.
    let mut samples: Vec<Vec<Measured>> = selected.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (index, (name, start)) in selected.iter().enumerate() {
            let dir = work.path().join(format!("{index}-{run}"));
            std::fs::create_dir_all(&dir).unwrap();
            let group = unique("compare-group");
            let measured = measure(&env, &topic, &ends, &group, &dir, || start(&group, &dir));
            eprintln!(
                "{name}: {:.2} s ({}), {:.0} MiB, {:.1} s CPU",
                measured.seconds,
                measured
                    .joined_after
                    .map_or("group join not seen".to_owned(), |joined| format!(
                        "{:.2} s after the group join",
                        measured.seconds - joined
                    )),
                measured.peak_rss_kib as f64 / 1024.0,
                measured.cpu_seconds
            );
            samples[index].push(measured);
        }
    }
    let results: Vec<(&String, Measured)> = selected
        .iter()
        .zip(samples)
        .map(|((name, _), mut samples)| {
            samples.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            (name, samples.swap_remove(samples.len() / 2))
        })
        .collect();

    let bare = events as f64 / results[0].1.seconds;
    let bare_joined = results[0]
        .1
        .after_join()
        .map(|seconds| events as f64 / seconds);
    let bare_rss = results[0].1.peak_rss_kib as f64;
    println!(
        "| program | msgs/s | vs the bare limit | msgs/s after the join | vs the bare limit | peak RSS | vs bare RSS | instances | CPU µs/msg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, measured) in &results {
        let rate = events as f64 / measured.seconds;
        let joined = measured.after_join().map(|seconds| events as f64 / seconds);
        let (joined_rate, joined_ratio) = match (joined, bare_joined) {
            (Some(rate), Some(bare)) => (
                format!("{:.0}k", rate / 1000.0),
                format!("{:.0} %", 100.0 * rate / bare),
            ),
            _ => ("–".to_owned(), "–".to_owned()),
        };
        println!(
            "| {name} | {:.0}k | {:.0} % | {joined_rate} | {joined_ratio} | {:.0} MiB | {:.2}× | {} | {:.2} |",
            rate / 1000.0,
            100.0 * rate / bare,
            measured.peak_rss_kib as f64 / 1024.0,
            measured.peak_rss_kib as f64 / bare_rss,
            measured.peak_pythons,
            measured.cpu_seconds * 1e6 / events as f64
        );
    }
    if amqp_events > 0 {
        compare_amqp(&runtime, &env, &python, work.path(), amqp_events, runs);
    }
}

/// The AMQP comparison (see the module doc).
fn compare_amqp(
    runtime: &tokio::runtime::Runtime,
    env: &Env,
    python: &Path,
    work: &Path,
    events: usize,
    runs: usize,
) {
    let (_, binary) = sluice_builds().swap_remove(0);
    let admin = runtime.block_on(amqp::AmqpAdmin::connect(env));
    let payloads: Vec<(String, String)> =
        (0..events).map(|i| (format!("m-{i}"), event(i))).collect();
    let script = repo_root().join("bench/python/amqp_consumer.py");
    let mut results = Vec::new();
    for program in ["pika", "sluice"] {
        let mut samples = Vec::new();
        for run in 0..runs {
            let queue = unique("compare-amqp");
            runtime.block_on(admin.declare_queue(&queue));
            runtime.block_on(admin.publish(&queue, &payloads));
            let dir = work.join(format!("amqp-{program}-{run}"));
            std::fs::create_dir_all(dir.join("out")).unwrap();
            let started = Instant::now();
            let mut child = if program == "pika" {
                Command::new(python)
                    .arg(&script)
                    .args([&env.amqp_url, &queue])
                    .arg(dir.join("out"))
                    .arg(events.to_string())
                    .spawn()
                    .unwrap()
            } else {
                let trigger = format!(
                    "[trigger.amqp]\nurl = \"{}\"\nqueue = \"{queue}\"",
                    env.amqp_url
                );
                start_sluice(
                    &binary,
                    &dir,
                    &trigger,
                    r#"command = ["cat"]"#,
                    SCHEMA,
                    "",
                    "",
                )
            };
            let (mut peak_rss_kib, mut cpu_seconds) = (0, 0.0);
            loop {
                let usage = tree_usage(child.id());
                peak_rss_kib = peak_rss_kib.max(usage.rss_kib);
                cpu_seconds = usage.cpu_seconds.max(cpu_seconds);
                let exited = child.try_wait().unwrap();
                if program == "pika" {
                    if let Some(status) = exited {
                        assert!(status.success(), "pika consumer failed: {status}");
                        break;
                    }
                } else {
                    assert!(
                        exited.is_none(),
                        "sluice exited early; see {}",
                        dir.display()
                    );
                    let (ready, _) = runtime.block_on(admin.counts(&queue));
                    if ready == 0 && parquet_rows(&dir.join("out")) >= events as i64 {
                        break;
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(900), "timed out");
                std::thread::sleep(Duration::from_millis(100));
            }
            let seconds = started.elapsed().as_secs_f64();
            stop(&mut child);
            eprintln!("amqp {program}: {seconds:.2} s");
            samples.push(Measured {
                seconds,
                joined_after: None,
                peak_rss_kib,
                cpu_seconds,
                peak_pythons: 0,
            });
        }
        samples.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        results.push((program, samples.swap_remove(samples.len() / 2)));
    }
    let pika = events as f64 / results[0].1.seconds;
    println!("\nAMQP, {events} persistent messages on one queue, default settings\n");
    println!("| program | msgs/s | vs pika | peak RSS |");
    println!("|---|---|---|---|");
    for (name, measured) in &results {
        let rate = events as f64 / measured.seconds;
        let name = match *name {
            "pika" => {
                "hand-written pika: prefetch 10,000, json.loads → pyarrow → zstd Parquet per 10,000, one multiple-ack"
            }
            _ => "Sluice, `cat` in stream mode, default settings",
        };
        println!(
            "| {name} | {:.1}k | {:.2}× | {:.0} MiB |",
            rate / 1000.0,
            rate / pika,
            measured.peak_rss_kib as f64 / 1024.0
        );
    }
}

/// Rows in the Parquet data files under `dir` (markers under `_sluice/` excluded).
fn parquet_rows(dir: &Path) -> i64 {
    let mut rows = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("_sluice") {
            rows += parquet_rows(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            if let Ok(reader) = parquet::file::reader::SerializedFileReader::new(file) {
                use parquet::file::reader::FileReader as _;
                rows += reader.metadata().file_metadata().num_rows();
            }
        }
    }
    rows
}

fn python_consumer(
    python: &Path,
    script: &Path,
    env: &Env,
    topic: &str,
    events: usize,
    variant: &'static str,
) -> Starter<'static> {
    let (python, script, brokers, topic) = (
        python.to_path_buf(),
        script.to_path_buf(),
        env.brokers.clone(),
        topic.to_owned(),
    );
    Box::new(move |group, dir| {
        Command::new(&python)
            .arg(&script)
            .args([&brokers, &topic, group])
            .arg(dir.join("out.parquet"))
            .args([events.to_string().as_str(), variant])
            .stderr(program_log(dir))
            .spawn()
            .unwrap()
    })
}

/// The `sluice` binaries to run, labelled: those of `COMPARE_BUILDS` (`LABEL=PATH,…`),
/// else the one `sluice_binary` finds, unlabelled.
fn sluice_builds() -> Vec<(Option<String>, PathBuf)> {
    match std::env::var("COMPARE_BUILDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|build| {
                let (label, path) = build
                    .split_once('=')
                    .expect("COMPARE_BUILDS is LABEL=PATH,LABEL=PATH");
                (Some(label.trim().to_owned()), PathBuf::from(path.trim()))
            })
            .collect(),
        _ => vec![(None, sluice_binary())],
    }
}

/// `sluice run` (the `binary` given) on a job folder made in the run's directory, output
/// to a local folder; `tables` go after `[batch]`.
fn sluice_job(
    env: &Env,
    topic: &str,
    function: &str,
    schema: &str,
    tables: &str,
    binary: &Path,
) -> Starter<'static> {
    let (brokers, topic, function, schema, tables, binary) = (
        env.brokers.clone(),
        topic.to_owned(),
        function.to_owned(),
        schema.to_owned(),
        tables.to_owned(),
        binary.to_owned(),
    );
    Box::new(move |group, dir| {
        let trigger = format!(
            "[trigger.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nstart = \"earliest\""
        );
        start_sluice(
            &binary,
            dir,
            &trigger,
            &function,
            &schema,
            &format!("[batch]\nmax_records = 10000\n{tables}"),
            "max_file_age = \"1s\"",
        )
    })
}

/// `sluice run` on a job folder made in `dir`: the trigger table, the `[function]` body
/// (stream mode), `extra` tables, output to the local folder `dir/out` with
/// `output_extra` lines.
fn start_sluice(
    binary: &Path,
    dir: &Path,
    trigger: &str,
    function: &str,
    schema: &str,
    extra: &str,
    output_extra: &str,
) -> Child {
    let toml = format!(
        "name = \"compare\"\n{trigger}\n[function]\n{function}\nmode = \"stream\"\n{extra}\n[output]\nurl = \"{out}\"\nschema = {schema}\n{output_extra}\n",
        out = dir.join("out").display()
    );
    std::fs::write(dir.join("job.toml"), toml).unwrap();
    Command::new(binary)
        .arg("run")
        .arg(dir)
        // Warnings, and the line that says the group join assigned the partitions.
        .env("SLUICE_LOG", format!("warn,{ASSIGNED_TARGET}=info"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(program_log(dir))
        .spawn()
        .unwrap()
}

/// Where Sluice logs "kafka partitions assigned".
const ASSIGNED_TARGET: &str = "sluice_connectors::kafka::context";

/// A program's stderr, where each says "kafka partitions assigned" once its group join is
/// done.
fn program_log(dir: &Path) -> std::fs::File {
    std::fs::File::create(dir.join("program.log")).unwrap()
}

fn says_assigned(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("program.log"))
        .is_ok_and(|log| log.contains("kafka partitions assigned"))
}

/// Runs a program until `group` has committed `ends`, sampling its process tree's RSS and
/// noting when its log (in `dir`) says the group join is done.
fn measure(
    env: &Env,
    topic: &str,
    ends: &std::collections::BTreeMap<i32, i64>,
    group: &str,
    dir: &Path,
    start: impl FnOnce() -> Child,
) -> Measured {
    let probe = CommittedProbe::new(env, group);
    let partitions = ends.keys().max().map_or(0, |p| p + 1);
    let started = Instant::now();
    let mut child = start();
    let (mut peak_rss_kib, mut peak_pythons, mut cpu_seconds) = (0, 0, 0.0);
    let mut joined_after = None;
    loop {
        if joined_after.is_none() && says_assigned(dir) {
            joined_after = Some(started.elapsed().as_secs_f64());
        }
        let usage = tree_usage(child.id());
        cpu_seconds = usage.cpu_seconds.max(cpu_seconds);
        peak_rss_kib = peak_rss_kib.max(usage.rss_kib);
        peak_pythons = peak_pythons.max(usage.pythons);
        let committed = probe.committed(topic, partitions);
        if ends.iter().all(|(p, end)| committed.get(p) == Some(end)) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "program failed: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(900), "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop(&mut child);
    Measured {
        seconds,
        joined_after,
        peak_rss_kib,
        cpu_seconds,
        peak_pythons,
    }
}

/// SIGTERM, then waits for the exit.
fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}
