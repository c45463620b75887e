//! `sluice init` and the Python SDK under the platform, without any broker or store:
//! each template's job folder validates and runs on its samples (`invoke`), and a
//! stream-mode SDK function runs a whole `sluice run --once` into Parquet.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sluice(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(dir)
        .env("SLUICE_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// `sluice init` of `template` in a fresh folder, then `validate`; returns the folder.
fn init(template: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let out = sluice(&["init", "clicks", "--template", template], root.path());
    assert_ok(&out);
    assert_ok(&sluice(&["validate", "clicks"], root.path()));
    root
}

/// `sluice invoke` of a template's job on its samples: the rows it printed, after
/// asserting the summary says 5 records gave 4 rows and 1 rejected.
fn invoke_samples(root: &Path) -> (Vec<serde_json::Value>, String) {
    let out = sluice(
        &["invoke", "clicks", "--input", "clicks/events.ndjson"],
        root,
    );
    let stderr = assert_ok(&out);
    assert!(
        stderr.contains("5 records in, 4 rows out, 1 rejected, 0 dead letters"),
        "{stderr}"
    );
    (rows(&out), stderr)
}

fn rows(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn the_python_template_validates_and_its_sdk_function_runs_on_the_samples() {
    let root = init("python");
    assert!(root.path().join("clicks/sluice_fn/__init__.py").is_file());
    let (rows, stderr) = invoke_samples(root.path());
    assert!(
        stderr.contains("rejected line 5: ValueError: invalid literal for int()"),
        "{stderr}"
    );
    assert_eq!(rows[0]["user_id"], 7);
    assert_eq!(rows[0]["event_date"], "2026-11-27");
}

#[test]
fn the_exec_template_validates_and_runs_on_the_samples() {
    let root = init("exec");
    assert!(!root.path().join("clicks/sluice_fn").exists());
    let (rows, _) = invoke_samples(root.path());
    assert_eq!(rows.len(), 4);
}

#[test]
fn the_python_arrow_template_validates() {
    init("python-arrow");
}

#[test]
fn init_refuses_an_existing_folder_and_leaves_it_alone() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("clicks")).unwrap();
    std::fs::write(root.path().join("clicks/job.toml"), "mine").unwrap();
    let out = sluice(&["init", "clicks"], root.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("clicks/job.toml")).unwrap(),
        "mine"
    );
}

#[test]
fn a_stream_mode_sdk_function_runs_under_sluice_run_into_parquet() {
    let root = init("python");
    let job = root.path().join("clicks");
    std::fs::create_dir(job.join("inbox")).unwrap();
    // the samples as CSV: the bucket trigger's reader makes each row a JSON object of strings
    std::fs::write(
        job.join("inbox/monday.csv"),
        "user,url,action,ts\n7,/a,view,2026-11-27T10:00:00Z\nnobody,/b,view,2026-11-27T10:01:00Z\n8,/c,,2026-11-28T11:00:00Z\n",
    )
    .unwrap();
    assert_ok(&sluice(&["run", "--once", "clicks"], root.path()));
    let mut files = Vec::new();
    collect_parquet(&job.join("lake"), &mut files);
    files.sort();
    let counts: Vec<(String, i64)> = files
        .iter()
        .map(|file| {
            let reader = parquet::file::reader::SerializedFileReader::new(
                std::fs::File::open(file).unwrap(),
            )
            .unwrap();
            let partition = file.parent().unwrap().file_name().unwrap();
            (
                partition.to_string_lossy().into_owned(),
                parquet::file::reader::FileReader::metadata(&reader)
                    .file_metadata()
                    .num_rows(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            ("event_date=2026-11-27".to_owned(), 1),
            ("event_date=2026-11-28".to_owned(), 1)
        ]
    );
    // the record the function raised on is a dead letter with the exception as the error
    let mut letters = String::new();
    for entry in std::fs::read_dir(job.join("lake/_sluice/dead_letters")).unwrap() {
        letters.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let letters: Vec<serde_json::Value> = letters
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["error"],
        "ValueError: invalid literal for int() with base 10: 'nobody'"
    );
    assert_eq!(letters[0]["origin"]["line"], 3);
}

fn collect_parquet(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("_sluice") {
            collect_parquet(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "parquet") {
            files.push(path);
        }
    }
}

#[test]
fn invoke_gives_an_envelope_sdk_function_the_sample_key_headers_and_timestamp() {
    let root = init("python");
    let job = root.path().join("clicks");
    let toml = std::fs::read_to_string(job.join("job.toml"))
        .unwrap()
        .replace(
            "mode = \"stream\"",
            "mode = \"stream\"\ninput = \"envelope\"",
        );
    std::fs::write(job.join("job.toml"), toml).unwrap();
    std::fs::write(
        job.join("transform.py"),
        r#"from sluice_fn import records

@records(envelope=True)
def transform(message):
    return {"user_id": int(message.key), "url": message.headers["page"],
            "action": message.value["action"], "event_date": message.timestamp.date().isoformat()}
"#,
    )
    .unwrap();
    std::fs::write(
        job.join("envelopes.ndjson"),
        r#"{"value": {"action": "view"}, "key": "42", "headers": {"page": "/a"}, "timestamp_ms": 1764237600000}
"#,
    )
    .unwrap();
    let out = sluice(
        &["invoke", "clicks", "--input", "clicks/envelopes.ndjson"],
        root.path(),
    );
    let stderr = assert_ok(&out);
    assert!(stderr.contains("1 records in, 1 rows out"), "{stderr}");
    assert_eq!(
        rows(&out),
        vec![
            serde_json::json!({"user_id": 42, "url": "/a", "action": "view", "event_date": "2025-11-27"})
        ]
    );
}
