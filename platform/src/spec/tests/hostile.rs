//! Hostile specs (findings 5–7 of the hostile-input run): each must fail validation with
//! an error naming its field, report everything at once, and never echo a secret.

use super::*;

/// A secret as the environment would hold it.
const SECRET: &str = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";

fn secret_env(name: &str) -> Option<String> {
    match name {
        "AWS_SECRET_ACCESS_KEY" => Some(SECRET.into()),
        _ => env(name),
    }
}

fn parse_with_secret(text: &str) -> Result<JobSpec, SpecErrors> {
    parse_job(text, Path::new(FILE), Path::new(DIR), &secret_env)
}

#[test]
fn an_absurd_memory_size_is_not_unlimited() {
    let text = MINIMAL.replace(
        "[function]\n",
        "[function]\nmemory = \"99999999999999EiB\"\n",
    );
    let error = error_for(&text, "function.memory");
    assert!(error.message.contains("too large"), "{}", error.message);
    assert!(
        error.message.contains("4096GiB"),
        "says the range: {}",
        error.message
    );
}

#[test]
fn credentials_in_a_store_url_are_refused_and_not_echoed() {
    let text = minimal_replacing(
        "url = \"lake\"",
        "url = \"s3://AKIAIOSFODNN7EXAMPLE:s3cr3t-literal@lake/clicks\"",
    );
    let error = error_for(&text, "output.url");
    let shown = error.to_string();
    assert!(
        !shown.contains("s3cr3t-literal") && !shown.contains("AKIAIOSFODNN7EXAMPLE"),
        "{shown}"
    );
}

#[test]
fn a_secret_from_the_environment_is_masked_in_errors() {
    let text = minimal_replacing(
        "brokers = \"localhost:9092\"",
        "brokers = \"${AWS_SECRET_ACCESS_KEY}\"",
    );
    let errors = parse_with_secret(&text).expect_err("not host:port");
    let shown = errors.to_string();
    assert!(
        errors.for_field("trigger.kafka.brokers").is_some(),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("wJalr"), "{shown}");
}

#[test]
fn secrets_are_collected_and_never_printed_by_debug() {
    let text = minimal_with(
        "[output.options]\nsecret_access_key = \"${AWS_SECRET_ACCESS_KEY}\"\n[function.env]\nDB_PASSWORD = \"${AWS_SECRET_ACCESS_KEY}\"",
    );
    let job = parse_with_secret(&text).unwrap_or_else(|errors| panic!("{errors}"));
    let debug = format!("{job:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert_eq!(job.redact(&format!("failed: {SECRET}")), "failed: ***");
}

#[test]
fn binary_and_float_columns_cannot_partition() {
    for kind in ["binary", "float32", "float64"] {
        let text = minimal_replacing(
            "schema = { user_id = \"int64\" }",
            &format!("schema = {{ user_id = \"int64\", v = \"{kind}\" }}\npartition_by = [\"v\"]"),
        );
        let error = error_for(&text, "output.partition_by");
        assert!(error.message.contains(kind), "{}", error.message);
    }
}

#[test]
fn options_the_consumer_sets_itself_are_refused() {
    for key in ["enable.auto.commit", "group.id", "bootstrap.servers"] {
        let text = minimal_with(&format!("[trigger.kafka.options]\n\"{key}\" = \"x\""));
        error_for(&text, &format!("trigger.kafka.options.{key}"));
    }
}

#[test]
fn a_group_with_control_characters_is_refused() {
    let text = minimal_replacing(
        "topic = \"clicks\"",
        "topic = \"clicks\"\ngroup = \"a\\u0000b\"",
    );
    error_for(&text, "trigger.kafka.group");
}

#[test]
fn string_is_a_documented_alias_of_utf8() {
    let text = minimal_replacing(
        "schema = { user_id = \"int64\" }",
        "schema = { user_id = \"int64\", name = \"string\" }",
    );
    parse(&text).unwrap_or_else(|errors| panic!("{errors}"));
}

#[test]
fn a_misspelled_program_or_script_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("job.toml");
    std::fs::write(dir.path().join("transform.py"), "").expect("script");
    let check = |command: &str| {
        let text = minimal_replacing("command = [\"python3\", \"transform.py\"]", command);
        let path_env = |name: &str| (name == "PATH").then(|| "/usr/bin:/bin".to_owned());
        parse_job(&text, &file, dir.path(), &path_env)
    };
    check("command = [\"python3\", \"transform.py\"]").unwrap_or_else(|errors| panic!("{errors}"));
    for command in [
        "command = [\"python3\", \"transfrom.py\"]",
        "command = [\"./transfrom\"]",
        "command = [\"pyhton3\", \"transform.py\"]",
    ] {
        let errors = check(command).expect_err(command);
        assert!(
            errors.for_field("function.command").is_some(),
            "{command}: {errors}"
        );
    }
}

#[test]
fn the_job_file_itself_is_accepted_as_the_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("job.toml"), MINIMAL).expect("job.toml");
    std::fs::write(dir.path().join("transform.py"), "").expect("script");
    let job = load_job(&dir.path().join("job.toml")).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(job.dir, dir.path());
}

#[test]
fn type_errors_and_unknown_fields_come_together_with_the_rest() {
    let text = r#"
name = "Bad Name"
[trigger.kafka]
brokers = "localhost:9092"
topic = "clicks"
[function]
command = ["cat"]
timeout = 30
colour = "blue"
[batch]
max_records = "ten"
[output]
url = "lake"
schema = { user_id = "int64" }
"#;
    let errors = errors(text);
    for field in [
        "name",
        "function.timeout",
        "function.colour",
        "batch.max_records",
    ] {
        assert!(
            errors.for_field(field).is_some(),
            "no error for {field}:\n{errors}"
        );
    }
    assert_eq!(errors.0.len(), 4, "each once:\n{errors}");
}

#[test]
fn a_duplicate_key_is_named() {
    let errors = errors("name = \"a\"\nname = \"b\"\n");
    assert!(
        errors.to_string().contains("duplicate key \"name\""),
        "{errors}"
    );
}

#[test]
fn a_huge_integer_names_the_field_and_range() {
    let text = minimal_with("[batch]\nmax_records = 99999999999999999999");
    let error = error_for(&text, "batch.max_records");
    assert!(error.message.contains("1 to 1000000"), "{}", error.message);
}

#[test]
fn an_amqp_url_parameter_error_names_the_parameter() {
    for (query, parameter) in [("heartbeat=soon", "heartbeat"), ("hearbeat=10", "hearbeat")] {
        let text = format!(
            "name = \"q\"\n[trigger.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f?{query}\"\nqueue = \"q\"\n[function]\ncommand = [\"cat\"]\n[output]\nurl = \"lake\"\nschema = {{ id = \"int64\" }}\n"
        );
        let error = error_for(&text, "trigger.amqp.url");
        assert!(error.message.contains(parameter), "{}", error.message);
    }
}

#[test]
fn a_file_that_is_not_utf8_gives_the_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("job.toml"),
        b"name = \"a\"\ntopic = \"\xff\"\n",
    )
    .expect("write");
    let errors = load_job(dir.path()).expect_err("not UTF-8");
    assert!(errors.to_string().contains("line 2, column 10"), "{errors}");
}

#[test]
fn echoed_values_are_cut() {
    let huge = "x".repeat(1 << 20);
    for text in [
        minimal_replacing("topic = \"clicks\"", &format!("topic = \"{huge}\"")),
        minimal_replacing("[function]\n", &format!("[function]\n{huge} = 1\n")),
        minimal_replacing(
            "[function]\n",
            &format!("[function]\ntimeout = \"{huge}\"\n"),
        ),
    ] {
        let errors = errors(&text);
        let shown = errors.to_string();
        assert!(shown.len() < 4096, "{} bytes of errors", shown.len());
    }
}

#[test]
fn the_webhook_token_comes_from_the_environment() {
    let bucket = |token: &str| {
        format!(
            "name = \"files\"\n[trigger.bucket]\nurl = \"inbox\"\nmode = \"notifications\"\n{token}\n[function]\ncommand = [\"cat\"]\n[output]\nurl = \"lake\"\nschema = {{ id = \"int64\" }}\n"
        )
    };
    let job = parse_with_secret(&bucket("token = \"${AWS_SECRET_ACCESS_KEY}\""))
        .unwrap_or_else(|errors| panic!("{errors}"));
    let Some(trigger) = job
        .trigger
        .config::<sluice_connectors::bucket::BucketTriggerConfig>()
    else {
        panic!("a bucket trigger")
    };
    let BucketDiscovery::Notifications { feed, .. } = &trigger.discovery else {
        panic!("notifications: {:?}", trigger.discovery)
    };
    let NotificationFeed::Webhook {
        token: Some(token), ..
    } = feed.as_ref()
    else {
        panic!("a webhook with a token: {feed:?}")
    };
    assert_eq!(
        token,
        &sluice_connectors::bucket::webhook::WebhookToken::new(SECRET)
    );
    assert!(!format!("{job:?}").contains(SECRET));

    let literal = parse_with_secret(&bucket("token = \"literal-token-0123456789\""))
        .expect_err("a literal token");
    let error = literal
        .for_field("trigger.bucket.token")
        .expect("names the token");
    assert!(!error.to_string().contains("literal-token"), "{error}");
    let weak = parse_with_secret(&bucket("token = \"${LAKE}\"")).expect_err("too short");
    assert!(weak.for_field("trigger.bucket.token").is_some(), "{weak}");
}
