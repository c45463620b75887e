//! `encoding = "arrow"`: input that does not fit the function's input schema.

use super::*;
use crate::testing::pyarrow_command;

/// Echoes the Arrow IPC stream it reads.
const ECHO: &str = r#"import sys
import pyarrow as pa
table = pa.ipc.open_stream(sys.stdin.buffer).read_all()
sink = pa.BufferOutputStream()
with pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table)
sys.stdout.buffer.write(sink.getvalue().to_pybytes())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_fit_the_input_schema_is_dead_lettered_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.py"), ECHO).unwrap();
    let mut command = pyarrow_command();
    command.push("echo.py".to_owned());
    let spec = job_with_function(
        dir.path(),
        &format!(
            r#"command = {command:?}
encoding = "arrow"
input_schema = {{ id = "int64 not null", day = "date32" }}
max_attempts = 3
retry_backoff = "10ms""#
        ),
    );
    let mut input = events(20);
    input[4] = Event::from_payload(
        r#"{"id":"four","day":"2026-01-01"}"#.to_owned(),
        input[4].origin.clone(),
    );
    let (source, acked) = source(input);
    let stats = run_over(&spec, source).await.unwrap();

    assert_eq!((stats.rows_out, stats.dead_letters), (19, 1), "{stats:?}");
    // The same input fails the same way: the batch is split at once, never retried.
    assert_eq!(stats.retries, 0, "{stats:?}");
    assert!(stats.bisections > 0, "{stats:?}");
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].to_string().contains("input schema"),
        "the dead letter says why: {dead:?}"
    );
    assert!(!acked.acked().is_empty(), "the rest was acknowledged");
}
