//! `encoding = "arrow"` against real subprocesses: Python functions using pyarrow, from a
//! virtual environment under `target/py-venv` (made with `pip install pyarrow` on first use).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use sluice_connectors::{Event, Origin};

use super::*;
use crate::output::schema::OutputSchema;
use crate::spec::InputMode;
use crate::testing::pyarrow_command;

/// An Arrow function. Input column `v` (int64); output `v`, `doubled` and the input's
/// column names; `v < 0` is rejected with `$error`; `v == 13` crashes after writing part
/// of the answer; argv[1] = "mismatch" writes `doubled` as text.
const ARROW_FUNCTION: &str = r#"
import os, sys
import pyarrow as pa

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
mismatch = len(sys.argv) > 1 and sys.argv[1] == "mismatch"
assert os.environ["SLUICE_ENCODING"] == "arrow"
if os.environ["SLUICE_MODE"] == "stream":
    stdout.write(b'{"$ready": true}\n')
    stdout.flush()

def answer(table):
    values = table.column("v").to_pylist()
    names = ",".join(table.column_names)
    good = [v for v in values if v >= 0]
    doubled = [f"x{v * 2}" for v in good] if mismatch else [v * 2 for v in good]
    rows = pa.table({
        "v": good, "doubled": doubled, "names": [names] * len(good),
        "pid": [os.getpid()] * len(good),
        "$error": pa.array([None] * len(good), pa.string()),
        "$record": pa.array([0] * len(good), pa.int64()),
    })
    bad = [i for i, v in enumerate(values) if v < 0]
    errors = pa.table({
        "v": pa.array([None] * len(bad), pa.int64()),
        "doubled": pa.array([None] * len(bad), rows.schema.field("doubled").type),
        "names": pa.array([None] * len(bad), pa.string()),
        "pid": pa.array([None] * len(bad), pa.int64()),
        "$error": ["negative"] * len(bad),
        "$record": pa.array(bad, pa.int64()),
    })
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows, max_chunksize=65536)
        if 13 in values:
            stdout.write(sink.getvalue().to_pybytes())
            stdout.flush()
            print("crashing on purpose", file=sys.stderr, flush=True)
            os._exit(3)
        writer.write_table(errors.cast(rows.schema))
    stdout.write(sink.getvalue().to_pybytes())
    stdout.flush()

while True:
    try:
        reader = pa.ipc.open_stream(stdin)
    except (pa.ArrowInvalid, EOFError, OSError):
        break
    answer(reader.read_all())
"#;

fn arrow_spec(dir: &Path, mode: FunctionMode, args: &[&str]) -> FunctionSpec {
    std::fs::write(dir.join("arrow_fn.py"), ARROW_FUNCTION).unwrap();
    let mut command = pyarrow_command();
    command.push("arrow_fn.py".to_string());
    command.extend(args.iter().map(|arg| arg.to_string()));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    FunctionSpec {
        encoding: Encoding::Arrow,
        timeout: Duration::from_secs(120),
        max_output: 1 << 30,
        ..super::spec(&command, mode)
    }
}

fn batch_of(values: impl IntoIterator<Item = i64>) -> EncodedBatch {
    let events: Vec<Event> = values
        .into_iter()
        .map(|v| {
            Event::from_payload(
                Bytes::from(format!(r#"{{"v":{v},"pad":"{}"}}"#, "x".repeat(16))),
                Origin::Sample { line: 1 },
            )
        })
        .collect();
    encode_batch(&events, InputMode::Value)
}

fn output_schema() -> OutputSchema {
    let decls = [
        ("v", "int64 not null"),
        ("doubled", "int64"),
        ("names", "utf8"),
        ("pid", "int64"),
    ];
    let decls: Vec<(String, String)> = decls
        .iter()
        .map(|(name, decl)| (name.to_string(), decl.to_string()))
        .collect();
    OutputSchema::from_declarations(&decls).unwrap()
}

fn column(rows: &arrow_array::RecordBatch, name: &str) -> Vec<i64> {
    rows.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_mode_answers_batch_after_batch_with_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let spec = arrow_spec(dir.path(), FunctionMode::Stream, &[]);
    let mut runner = FunctionRunner::new("arrow", dir.path(), &spec);
    let first = runner.invoke(&batch_of([1, -1, 2])).await.unwrap();
    assert!(
        first.init_time.is_some(),
        "the $ready line measures init time"
    );
    assert_eq!(first.row_count, 2);
    assert_eq!(
        first.errors,
        [RecordError {
            record: 1,
            message: "negative".into()
        }]
    );
    let rows = first.decode(&output_schema()).unwrap();
    assert_eq!(column(&rows, "v"), [1, 2]);
    assert_eq!(column(&rows, "doubled"), [2, 4]);
    let names = rows
        .column_by_name("names")
        .unwrap()
        .as_string::<i32>()
        .value(0);
    let mut names: Vec<&str> = names.split(',').collect();
    names.sort_unstable();
    assert_eq!(names, ["pad", "v"], "inferred input columns");
    let second = runner.invoke(&batch_of([5])).await.unwrap();
    let second_rows = second.decode(&output_schema()).unwrap();
    assert_eq!(column(&second_rows, "doubled"), [10]);
    assert_eq!(
        column(&rows, "pid")[0],
        column(&second_rows, "pid")[0],
        "one warm instance"
    );
    assert!(second.init_time.is_none() && !second.cold_start);
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_mode_reads_one_stream_and_writes_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = arrow_spec(dir.path(), FunctionMode::Exec, &[]);
    let mut runner = FunctionRunner::new("arrow", dir.path(), &spec);
    let output = runner.invoke(&batch_of([3, -4])).await.unwrap();
    assert_eq!(output.errors.len(), 1);
    let rows = output.decode(&output_schema()).unwrap();
    assert_eq!(column(&rows, "doubled"), [6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_input_schema_shapes_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = arrow_spec(dir.path(), FunctionMode::Exec, &[]);
    spec.input_schema = Some(Arc::new(Schema::new(vec![Field::new(
        "v",
        DataType::Int64,
        true,
    )])));
    let mut runner = FunctionRunner::new("arrow", dir.path(), &spec);
    let output = runner.invoke(&batch_of([3])).await.unwrap();
    let rows = output.decode(&output_schema()).unwrap();
    assert_eq!(
        rows.column_by_name("names")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "v"
    );
    // A record that does not fit fails before the function runs, for the split to find.
    let bad = encode_batch(
        &[Event::from_payload(
            Bytes::from_static(br#"{"v":"x"}"#),
            Origin::Sample { line: 1 },
        )],
        InputMode::Value,
    );
    let error = runner.invoke(&bad).await.unwrap_err();
    assert!(matches!(error, InvokeError::Input(_)), "{error}");
    assert!(error.is_transient());
}

#[tokio::test(flavor = "multi_thread")]
async fn output_that_does_not_fit_the_schema_names_the_column() {
    let dir = tempfile::tempdir().unwrap();
    let spec = arrow_spec(dir.path(), FunctionMode::Stream, &["mismatch"]);
    let mut runner = FunctionRunner::new("arrow", dir.path(), &spec);
    let output = runner.invoke(&batch_of([1, 2])).await.unwrap();
    let error = output.decode(&output_schema()).unwrap_err();
    assert_eq!(error.column.as_deref(), Some("doubled"), "{error}");
    assert!(error.to_string().contains("without loss"), "{error}");
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_stream_fails_the_batch_and_the_next_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let spec = arrow_spec(dir.path(), FunctionMode::Stream, &[]);
    let mut runner = FunctionRunner::new("arrow", dir.path(), &spec);
    let error = runner.invoke(&batch_of([1, 13, 2])).await.unwrap_err();
    match &error {
        InvokeError::Exit { code, stderr_tail } => {
            assert_eq!(*code, 3);
            assert!(stderr_tail.contains("crashing on purpose"), "{stderr_tail}");
        }
        other => panic!("expected an exit error, got {other}"),
    }
    assert!(runner.warm_pid().is_none(), "the crashed instance is gone");
    let next = runner.invoke(&batch_of([4])).await.unwrap();
    assert!(next.cold_start);
    assert_eq!(
        column(&next.decode(&output_schema()).unwrap(), "doubled"),
        [8]
    );
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_batch_goes_through_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let spec = arrow_spec(dir.path(), FunctionMode::Stream, &[]);
    let mut runner = FunctionRunner::new("arrow", dir.path(), &spec);
    let records = 500_000;
    // From 100: 13 would crash the function on purpose.
    let input = batch_of(100..records + 100);
    let output = runner.invoke(&input).await.unwrap();
    assert_eq!(output.row_count, records as usize);
    let rows = output.decode(&output_schema()).unwrap();
    let doubled = column(&rows, "doubled");
    assert_eq!(doubled.len(), records as usize);
    assert_eq!(doubled[records as usize - 1], 2 * (records + 99));
    runner.shutdown().await;
}
