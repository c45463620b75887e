//! `sluice invoke` reads samples as the job's trigger would and goes on past a record
//! whose rows do not fit the schema. No broker or store needed.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::cli::{invokable_job, sluice_cli as sluice};

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_bucket_job_reads_csv_and_gzip_samples_with_its_own_reader() {
    for (sample, count) in [
        ("jobs/quickstart/samples/clicks-monday.csv", 400),
        ("jobs/quickstart/samples/clicks-wednesday.ndjson.gz", 500),
    ] {
        let out = sluice(&["invoke", "jobs/quickstart", "--input", sample]);
        let stderr = stderr_of(&out);
        assert!(out.status.success(), "{sample}: {stderr}");
        let expected = format!("{count} records in, {count} rows out, 0 rejected, 0 dead letters");
        assert!(stderr.contains(&expected), "{sample}: {stderr}");
    }
}

#[test]
fn a_record_whose_rows_do_not_fit_is_reported_as_a_dead_letter_and_the_rest_printed() {
    let dir = tempfile::tempdir().unwrap();
    invokable_job("misfit", &["cat"], r#"{ id = "int64 not null" }"#).write_in(dir.path());
    let input = dir.path().join("samples.ndjson");
    std::fs::write(&input, "{\"id\":1}\n{\"id\":\"one\"}\n{\"id\":3}\n").unwrap();
    let out = sluice(&[
        "invoke",
        dir.path().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"id\":1}\n{\"id\":3}\n"
    );
    assert!(
        stderr.contains("3 records in, 2 rows out, 0 rejected, 1 dead letters"),
        "{stderr}"
    );
    assert!(
        stderr.contains("dead letter line 2: function output does not fit the output schema"),
        "{stderr}"
    );
}

#[test]
fn envelopes_asked_for_but_not_given_name_the_line() {
    let out = sluice(&[
        "invoke",
        "jobs/clickstream",
        "--envelopes",
        "--input",
        "jobs/clickstream/events.ndjson",
    ]);
    assert!(!out.status.success());
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(
            "sample line 1 is not an envelope: expected a JSON object with a \"value\" field"
        ),
        "{stderr}"
    );
}
