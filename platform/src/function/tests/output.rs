//! What a function writes and how it is read: rows and error lines, line framing, output
//! too large or not UTF-8, large inputs and outputs through both pipes at once, and the
//! examples of `docs/function-protocol.md`.

use super::*;

#[tokio::test]
async fn exec_round_trip() {
    let dir = job_dir();
    std::fs::write(
        dir.path().join("double.py"),
        r#"
import json, os, sys
for index, line in enumerate(sys.stdin):
    record = json.loads(line)
    if "n" not in record:
        print(json.dumps({"$error": {"record": index, "message": "no n"}}))
        continue
    print(json.dumps({"n": record["n"] * 2, "mode": os.environ["SLUICE_MODE"]}))
"#,
    )
    .unwrap();
    let spec = spec(&["python3", "double.py"], FunctionMode::Exec);
    let output = run_once(
        dir.path(),
        &spec,
        &batch(&[r#"{"n":1}"#, r#"{"x":0}"#, r#"{"n":21}"#]),
    )
    .await
    .unwrap();
    assert_eq!(output.row_count, 2);
    assert_eq!(
        rows(&output),
        vec![
            serde_json::json!({"n": 2, "mode": "exec"}),
            serde_json::json!({"n": 42, "mode": "exec"})
        ]
    );
    assert_eq!(
        output.errors,
        vec![RecordError {
            record: 1,
            message: "no n".into()
        }]
    );
}

#[tokio::test]
async fn a_last_line_without_newline_counts() {
    let dir = job_dir();
    let spec = sh(r#"cat >/dev/null; printf '{"a":1}\n{"a":2}'"#);
    let output = run_once(dir.path(), &spec, &batch(&["{}"])).await.unwrap();
    assert_eq!(output.row_count, 2);
    assert_eq!(output.rows, b"{\"a\":1}\n{\"a\":2}\n");
}

#[tokio::test]
async fn a_ten_megabyte_line_is_one_row() {
    let dir = job_dir();
    let spec = spec(
        &[
            "python3",
            "-c",
            r#"import json, sys; sys.stdin.read(); print(json.dumps({"s": "x" * (10 * 1024 * 1024)}))"#,
        ],
        FunctionMode::Exec,
    );
    let output = run_once(dir.path(), &spec, &batch(&["{}"])).await.unwrap();
    assert_eq!(output.row_count, 1);
    assert_eq!(
        output.rows.len(),
        10 * 1024 * 1024 + r#"{"s": ""}"#.len() + 1
    );
}

#[tokio::test]
async fn non_utf8_output_is_a_protocol_error_naming_the_line() {
    let dir = job_dir();
    let spec = sh(r#"printf '{"a":1}\n{"a":"\377"}\n'"#);
    match run_once(dir.path(), &spec, &batch(&["{}"])).await {
        Err(InvokeError::Protocol { line, reason }) => {
            assert_eq!(line, 2);
            assert!(reason.contains("UTF-8"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn error_lines_are_collected_and_out_of_range_records_rejected() {
    let dir = job_dir();
    let ok = sh(r#"cat >/dev/null
echo '{"$error": {"record": 0, "message": "bad date"}}'
echo '{"a": 1}'
echo '{"$error": {"record": 1, "message": "bad id"}}'"#);
    let output = run_once(dir.path(), &ok, &batch(&["{}", "{}"]))
        .await
        .unwrap();
    assert_eq!(output.row_count, 1);
    let messages: Vec<(usize, &str)> = output
        .errors
        .iter()
        .map(|error| (error.record, error.message.as_str()))
        .collect();
    assert_eq!(messages, vec![(0, "bad date"), (1, "bad id")]);

    let out_of_range = sh(r#"cat >/dev/null; echo '{"$error": {"record": 2, "message": "x"}}'"#);
    match run_once(dir.path(), &out_of_range, &batch(&["{}", "{}"])).await {
        Err(InvokeError::Protocol { line: 1, reason }) => {
            assert!(reason.contains("record 2"), "{reason}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_function_that_writes_nothing_returns_no_rows() {
    let dir = job_dir();
    let output = run_once(dir.path(), &sh("cat >/dev/null"), &batch(&["{}", "{}"]))
        .await
        .unwrap();
    assert_eq!(output.row_count, 0);
    assert!(output.rows.is_empty() && output.errors.is_empty());
}

#[tokio::test]
async fn too_much_output_fails_and_kills_the_function() {
    let dir = job_dir();
    let mut spec = sh(r#"echo $$ $(readlink /proc/$$/ns/pid) > $OUT/pid; exec yes '{"a":1}'"#);
    spec.max_output = 1 << 20;
    match run_once(dir.path(), &spec, &batch(&["{}"])).await {
        Err(InvokeError::OutputTooLarge { limit }) => assert_eq!(limit, 1 << 20),
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    assert_gone(read_pid(&dir.path().join("pid"))).await;
}

#[tokio::test]
async fn fifty_megabytes_through_cat_do_not_deadlock() {
    let dir = job_dir();
    let record = format!("{{\"pad\":\"{}\"}}", "p".repeat(990));
    let count = 50 * 1024 * 1024 / (record.len() + 1);
    let input = EncodedBatch {
        bytes: format!("{record}\n").repeat(count).into_bytes(),
        records: count,
    };
    let output = run_once(dir.path(), &spec(&["cat"], FunctionMode::Exec), &input)
        .await
        .unwrap();
    assert_eq!(output.row_count, count);
    assert!(
        output.rows == input.bytes,
        "cat returned its input unchanged"
    );
}

/// The Python block of `docs/function-protocol.md` whose first line names `file`.
fn documented_example(file: &str) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/function-protocol.md"
    ))
    .expect("the protocol document exists");
    doc.split("```python\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.starts_with(&format!("# {file} ")))
        .unwrap_or_else(|| panic!("no example named {file}"))
        .to_owned()
}

#[tokio::test]
async fn the_documented_examples_work() {
    let dir = job_dir();
    for file in ["transform.py", "transform_stream.py"] {
        std::fs::write(dir.path().join(file), documented_example(file)).unwrap();
    }
    let input = batch(&[
        r#"{"user":"7","url":"/a"}"#,
        r#"{"url":"/b"}"#,
        "not json",
        r#"{"user":"9","url":"/c"}"#,
    ]);
    let expected_rows = vec![
        serde_json::json!({"user_id": 7, "url": "/a"}),
        serde_json::json!({"user_id": 9, "url": "/c"}),
    ];
    let failed_records = |output: &FunctionOutput| -> Vec<usize> {
        output.errors.iter().map(|error| error.record).collect()
    };

    let exec = spec(&["python3", "transform.py"], FunctionMode::Exec);
    let output = run_once(dir.path(), &exec, &input).await.unwrap();
    assert_eq!(rows(&output), expected_rows);
    assert_eq!(failed_records(&output), vec![1, 2]);

    let stream = spec(&["python3", "transform_stream.py"], FunctionMode::Stream);
    let mut runner = test_runner("job", dir.path(), &stream);
    for round in 0..2 {
        let output = runner.invoke(&input).await.unwrap();
        assert_eq!(rows(&output), expected_rows);
        assert_eq!(failed_records(&output), vec![1, 2]);
        assert_eq!(output.init_time.is_some(), round == 0);
    }
    runner.shutdown().await;
}
