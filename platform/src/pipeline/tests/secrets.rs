//! A function that holds a secret in its environment and prints it: the platform's log,
//! the dead letters' errors and the job's status never show it; the dead letters keep
//! their payloads byte for byte, secret or not.

use std::sync::{Arc, Mutex, PoisonError};

use super::*;
use crate::pool::node::NodeCapacity;
use crate::status::StatusBoard;

const SECRET: &str = "tok-3c9e51a7d0f4";

/// A job whose function gets `TOKEN` from `${API_TOKEN}` (a secret-looking name).
fn job_with_secret(dir: &Path, script: &str, extra_function: &str) -> JobSpec {
    std::fs::write(dir.join("fn.sh"), script).unwrap();
    let text = format!(
        r#"name = "secrets-test"
[trigger.bucket]
url = "memory://in"
[function]
command = ["sh", "fn.sh"]
{extra_function}
[function.env]
TOKEN = "${{API_TOKEN}}"
[batch]
max_records = 10
[output]
url = "out"
partition_by = ["day"]
schema = {{ id = "int64 not null", day = "date32" }}
"#
    );
    let lookup = |name: &str| (name == "API_TOKEN").then(|| SECRET.to_owned());
    parse_job(&text, &dir.join("job.toml"), dir, &lookup).unwrap()
}

/// A folder every user may write to, where a function leaves marks for the test.
fn marks_folder() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let base = Path::new(crate::function::SHARED_TEST_DIR);
    std::fs::create_dir_all(base).unwrap();
    let marks = tempfile::tempdir_in(base).unwrap();
    std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    marks
}

/// What the fmt layer writes, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// A two-worker runtime whose every thread logs (at every level) into the returned
/// buffer, so the records of the job's tasks and of the stderr readers are all seen.
fn logging_runtime() -> (tokio::runtime::Runtime, Captured) {
    let captured = Captured::default();
    let writer = captured.clone();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // Kept for the thread's life: the runtime's threads end with the runtime.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()
        .unwrap();
    (runtime, captured)
}

#[test]
fn a_function_printing_its_secret_leaks_it_into_no_log_and_no_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    // Prints its token to stderr on every batch; crashes on id 7 after printing the token
    // again; rejects the record at index 2 of every batch with the token in the message.
    let script = r#"echo "using token $TOKEN" >&2
i=0; while IFS= read -r line; do
  case "$line" in *'"id":7,'*) echo "cannot use $TOKEN for 7" >&2; exit 1 ;; esac
  if [ "$i" = 2 ]; then echo "{\"\$error\": {\"record\": 2, \"message\": \"token $TOKEN refused\"}}"; else printf '%s\n' "$line"; fi
  i=$((i+1))
done"#;
    let spec = job_with_secret(
        dir.path(),
        script,
        "max_attempts = 2\nretry_backoff = \"10ms\"",
    );
    let mut records = events(20);
    // Record 7 carries the secret itself: its dead letter must keep it, unchanged.
    let payload = format!(r#"{{"id":7,"day":"2026-01-02","token":"{SECRET}"}}"#);
    records[7].payload = payload.clone().into();
    let (source, _) = source(records);
    let (runtime, log) = logging_runtime();
    let stats = runtime.block_on(run_over(&spec, source)).unwrap();
    drop(runtime);

    assert!(stats.dead_letters >= 2, "{stats:?}");
    let letters = dead_letters(dir.path());
    for letter in &letters {
        let error = letter["error"].as_str().unwrap();
        assert!(!error.contains(SECRET), "{error}");
    }
    let crashed = letters
        .iter()
        .find(|letter| {
            letter["error"]
                .as_str()
                .unwrap()
                .contains("cannot use *** for 7")
        })
        .unwrap_or_else(|| panic!("the crash is dead-lettered with its stderr: {letters:?}"));
    assert_eq!(
        crashed["payload"].as_str().unwrap().as_bytes(),
        payload.as_bytes()
    );
    assert!(
        letters
            .iter()
            .any(|letter| letter["error"] == "token *** refused"),
        "{letters:?}"
    );

    let log = log.text();
    assert!(
        log.contains("using token ***"),
        "the stderr lines are logged:\n{log}"
    );
    assert!(
        log.contains("token *** refused"),
        "the rejections are logged:\n{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_with_its_secret_in_the_error_publishes_the_reason_masked() {
    let dir = tempfile::tempdir().unwrap();
    // Every attempt fails with the token on stderr; the first leaves a mark, in a folder
    // the function's own user may write to (it sees the job folder read-only).
    let marks = marks_folder();
    let attempted = marks.path().join("attempted");
    let script = format!(
        r#"touch {}; cat >/dev/null; echo "token $TOKEN rejected upstream" >&2; exit 1"#,
        attempted.display()
    );
    let spec = job_with_secret(
        dir.path(),
        &script,
        "max_attempts = 2\nretry_backoff = \"30s\"",
    );
    let (source, acked) = source(events(5));
    let board = StatusBoard::new();
    let runtime = JobRuntime {
        node: NodeCapacity::global(None),
        status: board.job(&spec.name),
        observer: None,
    };
    let shutdown = CancellationToken::new();
    // A batch failing when shutdown is requested stops the job with its last error.
    let stop_after_first_attempt = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !attempted.exists() {
            assert!(Instant::now() < deadline, "the function never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(
        async {
            Job::over(&spec, source, runtime)
                .await
                .expect("open the job")
                .run(shutdown.clone())
                .await
        },
        stop_after_first_attempt
    );
    let error = result.unwrap_err();

    assert!(matches!(error, JobError::BatchFailed { .. }), "{error}");
    assert!(acked.acked().is_empty());
    let status = board.snapshot().remove(0);
    assert_eq!(status.state, JobState::Failed);
    let reason = status.reason.unwrap();
    assert!(reason.contains("token *** rejected upstream"), "{reason}");
    assert!(!reason.contains(SECRET), "{reason}");
}

#[test]
fn a_stream_instance_writing_its_secret_on_stdout_leaks_it_into_no_log_and_no_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    // Answers each batch (input ends with an empty line) with its records, except that
    // id 7 becomes a log line on stdout holding the token: a protocol error that kills
    // the instance.
    let script = r#"while IFS= read -r line; do
  if [ -z "$line" ]; then echo; continue; fi
  case "$line" in *'"id":7,'*) echo "debug: token $TOKEN" ;; *) printf '%s\n' "$line" ;; esac
done"#;
    let spec = job_with_secret(
        dir.path(),
        script,
        "mode = \"stream\"\nmax_attempts = 2\nretry_backoff = \"10ms\"",
    );
    let (source, _) = source(events(20));
    let (runtime, log) = logging_runtime();
    let stats = runtime.block_on(run_over(&spec, source)).unwrap();
    drop(runtime);

    assert_eq!((stats.rows_out, stats.dead_letters), (19, 1), "{stats:?}");
    let letters = dead_letters(dir.path());
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.contains("debug: token ***"), "{error}");
    let log = log.text();
    assert!(
        log.contains("function instance failed and was killed"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
}
