//! The hostile-spec corpus: every folder under `tests/hostile_specs/` holds one job.toml a
//! hostile (or careless) user could write, and `expectations.txt` says what
//! `sluice validate` must answer: the exit code, the file and each field named, a piece of
//! text. No answer may show a secret, and none may be large. Two more cases, too big to
//! keep as files (a 1 MB value and a 1 MB key), are generated here.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Secret values given to every run (by variables whose names look secret) or written
/// literally in the corpus; none may appear in any answer.
const SECRETS: &[(&str, &str)] = &[
    (
        "HOSTILE_AWS_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    ),
    ("HOSTILE_KAFKA_PASSWORD", "kafka-pw-0f3e9b7c"),
    ("HOSTILE_AMQP_PASSWORD", "amqp-pw-5d1c7a2e"),
];
const LITERAL_SECRETS: &[&str] = &["s3cr3t-literal", "AKIAIOSFODNN7EXAMPLE"];

/// Largest answer (stdout + stderr) any spec may produce.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

fn validate(target: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("validate")
        .arg(target)
        .env_remove("HOSTILE_UNSET_VARIABLE")
        .env("SLUICE_LOG", "warn");
    for (name, value) in SECRETS {
        command.env(name, value);
    }
    command.output().unwrap()
}

struct Expectation {
    folder: String,
    exit: i32,
    fields: Vec<String>,
    text: String,
}

fn expectations(corpus: &Path) -> Vec<Expectation> {
    std::fs::read_to_string(corpus.join("expectations.txt"))
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let parts: Vec<&str> = line.split(" | ").map(str::trim).collect();
            assert!(
                parts.len() == 4 || parts.len() == 3,
                "malformed line {line:?}"
            );
            Expectation {
                folder: parts[0].to_owned(),
                exit: parts[1].parse().unwrap(),
                fields: parts[2]
                    .split(',')
                    .map(str::trim)
                    .filter(|field| !field.is_empty())
                    .map(str::to_owned)
                    .collect(),
                text: parts.get(3).copied().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Every problem with one answer, or none.
fn check(folder: &Path, expectation: &Expectation) -> Vec<String> {
    let file = folder.join("job.toml");
    let target: PathBuf = if expectation.folder.ends_with("-given-as-file") {
        file.clone()
    } else {
        folder.to_path_buf()
    };
    let out = validate(&target);
    let answer = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut problems = Vec::new();
    if out.status.code() != Some(expectation.exit) {
        problems.push(format!(
            "exit {:?}, expected {}",
            out.status.code(),
            expectation.exit
        ));
    }
    let file = file.display().to_string();
    if !answer.contains(&file) {
        problems.push(format!("does not name the file {file}"));
    }
    for field in &expectation.fields {
        if !answer.contains(&format!("{file}: {field}: ")) {
            problems.push(format!("does not name the field {field}"));
        }
    }
    if !answer.contains(&expectation.text) {
        problems.push(format!("does not say {:?}", expectation.text));
    }
    let secrets = SECRETS.iter().map(|(_, value)| *value);
    for secret in secrets.chain(LITERAL_SECRETS.iter().copied()) {
        if answer.contains(secret) {
            problems.push(format!("shows the secret {secret:?}"));
        }
    }
    if answer.len() > MAX_ANSWER_BYTES {
        problems.push(format!("answers with {} bytes", answer.len()));
    }
    if !problems.is_empty() {
        let cut: String = answer.chars().take(2000).collect();
        problems.push(format!("answer:\n{cut}"));
    }
    problems
}

#[test]
fn every_hostile_spec_is_refused_naming_its_file_and_field() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile_specs");
    let expectations = expectations(&corpus);
    assert!(
        expectations.len() >= 60,
        "the corpus holds {} specs",
        expectations.len()
    );
    let mut failures = Vec::new();
    for expectation in &expectations {
        let folder = corpus.join(&expectation.folder);
        assert!(folder.join("job.toml").is_file(), "{}", expectation.folder);
        let problems = check(&folder, expectation);
        if !problems.is_empty() {
            failures.push(format!("{}: {}", expectation.folder, problems.join("; ")));
        }
    }
    let folders = std::fs::read_dir(&corpus)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(
        folders,
        expectations.len(),
        "every folder has an expectation"
    );
    assert!(
        failures.is_empty(),
        "{} of {} specs answered wrongly:\n{}",
        failures.len(),
        expectations.len(),
        failures.join("\n")
    );
}

#[test]
fn a_megabyte_value_or_key_gives_a_short_answer() {
    let huge = "x".repeat(1 << 20);
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/hostile_specs/82-valid-given-as-file/job.toml"),
    )
    .unwrap();
    for (text, field) in [
        (
            base.replace("topic = \"hostile\"", &format!("topic = \"{huge}\"")),
            "trigger.kafka.topic",
        ),
        (
            base.replace(
                "[function]\n",
                &format!("[function]\ntimeout = \"{huge}\"\n"),
            ),
            "function.timeout",
        ),
        (
            base.replace("[function]\n", &format!("[function]\n{huge} = 1\n")),
            "function.",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("job.toml"), text).unwrap();
        let expectation = Expectation {
            folder: "huge".into(),
            exit: 1,
            fields: Vec::new(),
            text: field.into(),
        };
        let problems = check(dir.path(), &expectation);
        assert!(problems.is_empty(), "{field}: {}", problems.join("; "));
    }
}
