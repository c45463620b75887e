use std::path::Path;

use sluice_connectors::Origin;

use super::*;
use crate::spec::parse_job;

/// The job, with an empty job folder of its own (kept while the returned folder lives).
/// A function gets a copy of its job's folder at start: the machine's `/tmp`, used here
/// before, made each start copy whatever other programs had left there (20 s for one
/// start on a busy machine).
fn job(trigger: &str, function: &str, schema: &str) -> (tempfile::TempDir, JobSpec) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name = \"sample\"\n{trigger}\n[function]\n{function}\n[batch]\nmax_records = 100\n[output]\nurl = \"out\"\nschema = {schema}\n"
    );
    let spec = parse_job(
        &text,
        Path::new("/jobs/sample/job.toml"),
        dir.path(),
        &|_| None,
    )
    .unwrap();
    (dir, spec)
}

const KAFKA: &str = "[trigger.kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"";
const BUCKET: &str = "[trigger.bucket]\nurl = \"inbox\"\nformat = \"auto\"";

fn payloads(events: &[Event]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| {
            let Origin::Sample { line } = e.origin else {
                panic!("not a sample origin: {:?}", e.origin)
            };
            (line, String::from_utf8_lossy(&e.payload).into_owned())
        })
        .collect()
}

fn named(name: &str) -> SampleSource<'_> {
    SampleSource {
        name: Some(name),
        envelopes: false,
    }
}

#[test]
fn broker_samples_are_one_payload_per_non_blank_line() {
    let (_dir, spec) = job(KAFKA, "command = [\"cat\"]", "{ a = \"int64\" }");
    let events = read_samples(
        &spec,
        &SampleSource::default(),
        b"{\"a\":1}\n\n  \n{\"a\":2}\r\n{\"a\":3}",
    )
    .unwrap();
    assert_eq!(
        payloads(&events),
        vec![
            (1, "{\"a\":1}".into()),
            (4, "{\"a\":2}".into()),
            (5, "{\"a\":3}".into())
        ]
    );
}

#[test]
fn bucket_samples_use_the_trigger_reader_csv_json_arrays_and_gzip() {
    let (_dir, spec) = job(BUCKET, "command = [\"cat\"]", "{ a = \"utf8\" }");
    let csv = read_samples(&spec, &named("clicks.csv"), b"a,b\n1,x\n2,y\n").unwrap();
    assert_eq!(
        payloads(&csv),
        vec![
            (2, r#"{"a":"1","b":"x"}"#.into()),
            (3, r#"{"a":"2","b":"y"}"#.into())
        ]
    );
    let array = read_samples(&spec, &named("clicks.json"), b"[{\"a\": 1}, {\"a\": 2}]").unwrap();
    assert_eq!(array.len(), 2);
    assert_eq!(&array[1].payload[..], b"{\"a\":2}");

    // gzip of `{"a":1}\n{"a":2}\n`
    let gzip: &[u8] = &[
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xab, 0x56, 0x4a, 0x54, 0xb2,
        0x32, 0xac, 0xe5, 0xaa, 0x06, 0xd1, 0x46, 0xb5, 0x5c, 0x00, 0x66, 0xc0, 0x5a, 0x19, 0x10,
        0x00, 0x00, 0x00,
    ];
    let named_gz = read_samples(&spec, &named("clicks.ndjson.gz"), gzip).unwrap();
    // from stdin, without a name, the gzip magic bytes say it
    let stdin_gz = read_samples(&spec, &SampleSource::default(), gzip).unwrap();
    assert_eq!(
        payloads(&named_gz),
        vec![(1, "{\"a\":1}".into()), (2, "{\"a\":2}".into())]
    );
    assert_eq!(payloads(&stdin_gz), payloads(&named_gz));
}

#[test]
fn a_csv_row_of_the_wrong_width_is_an_unreadable_record_as_in_run() {
    let (_dir, spec) = job(BUCKET, "command = [\"cat\"]", "{ a = \"utf8\" }");
    let events = read_samples(&spec, &named("x.csv"), b"a,b\n1,2\n3\n").unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[0].unreadable.is_none());
    let ragged = &events[1];
    assert!(
        matches!(ragged.origin, Origin::Sample { line: 3 }),
        "{:?}",
        ragged.origin
    );
    assert!(ragged.unreadable.is_some(), "a dead letter, not a record");
}

#[test]
fn envelope_samples_carry_key_headers_and_timestamp() {
    let (_dir, spec) = job(
        KAFKA,
        "command = [\"cat\"]\ninput = \"envelope\"",
        "{ a = \"int64\" }",
    );
    let input = br#"{"value": {"a": 1}, "key": "user-7", "headers": {"trace": "abc", "flag": null, "raw": {"$binary": "/w=="}}, "timestamp_ms": 1700000000123}
{"a": 2}
{"value": "AAE=", "value_encoding": "base64", "key": "3q0=", "key_encoding": "base64"}
"#;
    let events = read_samples(&spec, &SampleSource::default(), input).unwrap();
    assert_eq!(&events[0].payload[..], b"{\"a\":1}");
    assert_eq!(events[0].key.as_deref(), Some(&b"user-7"[..]));
    assert_eq!(events[0].timestamp_ms, Some(1_700_000_000_123));
    let headers: Vec<_> = events[0]
        .headers
        .iter()
        .map(|h| (&*h.name, h.value.as_deref()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("flag", None),
            ("raw", Some(&[0xff][..])),
            ("trace", Some(&b"abc"[..]))
        ]
    );
    // not envelope-shaped: a plain payload, as a message without metadata
    assert_eq!(&events[1].payload[..], b"{\"a\": 2}");
    assert_eq!(events[1].key, None);
    assert_eq!(&events[2].payload[..], &[0, 1][..]);
    assert_eq!(events[2].key.as_deref(), Some(&[0xde, 0xad][..]));
}

#[test]
fn envelopes_asked_for_must_be_envelopes() {
    let (_dir, spec) = job(KAFKA, "command = [\"cat\"]", "{ a = \"int64\" }");
    let source = SampleSource {
        name: None,
        envelopes: true,
    };
    let error = read_samples(&spec, &source, b"{\"value\": 1}\n{\"a\": 2}\n").unwrap_err();
    assert_eq!(
        error.to_string(),
        "sample line 2 is not an envelope: expected a JSON object with a \"value\" field"
    );
}

#[tokio::test]
async fn rows_that_do_not_fit_the_schema_become_dead_letters_and_the_rest_is_kept() {
    let (_dir, spec) = job(
        KAFKA,
        "command = [\"cat\"]\nmode = \"stream\"",
        "{ id = \"int64 not null\" }",
    );
    let input = b"{\"id\":1}\n{\"id\":\"x\"}\n{\"id\":3}\n{\"id\":4}\n{\"id\":null}\n{\"id\":6}\n";
    let events = read_samples(&spec, &SampleSource::default(), input).unwrap();
    let report = invoke_sample(&spec, &events).await.unwrap();
    let ids: Vec<i64> = report
        .rows
        .iter()
        .flat_map(|batch| {
            batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, vec![1, 3, 4, 6]);
    let lines: Vec<u64> = report.dead_letters.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![2, 5]);
    assert!(
        report.dead_letters[0]
            .message
            .starts_with("function output does not fit the output schema: "),
        "{:?}",
        report.dead_letters
    );
    assert!(report.errors.is_empty());
}

#[test]
fn samples_are_cut_into_batches_by_records_and_bytes_like_the_batcher() {
    let event = |size: usize| Event::from_payload(vec![b'x'; size], Origin::Sample { line: 1 });
    let events: Vec<Event> = [4, 4, 4, 30, 4, 4, 4, 4].into_iter().map(event).collect();
    let spec = BatchSpec {
        max_records: 3,
        max_bytes: 10,
        max_wait: std::time::Duration::from_secs(1),
        max_idle: std::time::Duration::from_secs(1),
    };
    let sizes: Vec<Vec<usize>> = cut_batches(&events, &spec)
        .into_iter()
        .map(|batch| batch.iter().map(|e| e.payload.len()).collect())
        .collect();
    // 4+4 then a third 4 would pass 10 bytes; 30 alone; then 4+4, 4+4
    assert_eq!(
        sizes,
        vec![vec![4, 4], vec![4], vec![30], vec![4, 4], vec![4, 4]]
    );
}
