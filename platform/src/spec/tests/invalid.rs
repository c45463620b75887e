//! Invalid specs, each naming the field at fault (continued from `tests.rs`).

use super::*;

#[test]
fn named_connection_is_not_supported_yet() {
    let text = minimal_replacing("brokers = \"localhost:9092\"", "connection = \"local\"");
    let error = error_for(&text, "trigger.kafka.connection");
    assert!(error.message.contains("use brokers"), "{}", error.message);
}

#[test]
fn missing_brokers_is_reported() {
    error_for(
        &minimal_replacing("brokers = \"localhost:9092\"", ""),
        "trigger.kafka.brokers",
    );
}

#[test]
fn malformed_brokers_are_rejected() {
    let text = minimal_replacing("brokers = \"localhost:9092\"", "brokers = \"a:9092,b\"");
    error_for(&text, "trigger.kafka.brokers");
}

#[test]
fn bad_topic_is_rejected() {
    let error = error_for(
        &minimal_replacing("topic = \"clicks\"", "topic = \"clicks/2024\""),
        "trigger.kafka.topic",
    );
    assert!(
        error.message.contains("'.', '_' and '-'"),
        "{}",
        error.message
    );
}

#[test]
fn bad_start_lists_the_choices() {
    let text = minimal_replacing(
        "topic = \"clicks\"",
        "topic = \"clicks\"\nstart = \"beginning\"",
    );
    let error = error_for(&text, "trigger.kafka.start");
    assert!(
        error.message.contains("earliest, latest"),
        "{}",
        error.message
    );
}

#[test]
fn literal_secret_in_trigger_options_is_rejected() {
    let text = minimal_with("[trigger.kafka.options]\n\"sasl.password\" = \"hunter2\"");
    let error = error_for(&text, "trigger.kafka.options.sasl.password");
    assert!(error.message.contains("environment"), "{}", error.message);
    assert!(
        !error.to_string().contains("hunter2"),
        "the secret is never echoed: {error}"
    );
}

#[test]
fn literal_secret_in_output_options_is_rejected() {
    let text = minimal_with("[output.options]\nsecret_access_key = \"abc\"");
    error_for(&text, "output.options.secret_access_key");
}

#[test]
fn missing_env_var_names_field_and_variable() {
    let text = minimal_with("[output.options]\nsecret_access_key = \"${AWS_SECRET_ACCESS_KEY}\"");
    let error = error_for(&text, "output.options.secret_access_key");
    assert!(
        error.message.contains("AWS_SECRET_ACCESS_KEY is not set"),
        "{}",
        error.message
    );
}

#[test]
fn missing_env_var_in_brokers() {
    let text = minimal_replacing(
        "brokers = \"localhost:9092\"",
        "brokers = \"${NO_SUCH_BROKERS}\"",
    );
    let error = error_for(&text, "trigger.kafka.brokers");
    assert!(
        error.message.contains("NO_SUCH_BROKERS"),
        "{}",
        error.message
    );
}

#[test]
fn lone_dollar_is_rejected() {
    let text = minimal_with("[function.env]\nPRICE = \"$5\"");
    let error = error_for(&text, "function.env.PRICE");
    assert!(error.message.contains("$$"), "{}", error.message);
}

#[test]
fn empty_command_is_rejected() {
    error_for(
        &minimal_replacing("command = [\"python3\", \"transform.py\"]", "command = []"),
        "function.command",
    );
}

#[test]
fn missing_function_table_is_reported() {
    error_for(
        &minimal_replacing(
            "[function]\ncommand = [\"python3\", \"transform.py\"]\n",
            "",
        ),
        "function",
    );
}

#[test]
fn input_schema_needs_the_arrow_encoding() {
    let text = minimal_with("").replace(
        "[function]\n",
        "[function]\ninput_schema = { user = \"utf8\" }\n",
    );
    let error = error_for(&text, "function.input_schema");
    assert!(
        error.message.contains("encoding = \"arrow\""),
        "{}",
        error.message
    );
    let bad_type = minimal_with("").replace(
        "[function]\n",
        "[function]\nencoding = \"arrow\"\ninput_schema = { user = \"text\" }\n",
    );
    let error = error_for(&bad_type, "function.input_schema.user");
    assert!(error.message.contains("unknown type"), "{}", error.message);
}

#[test]
fn bad_mode_is_rejected() {
    let text = MINIMAL.replace("[function]\n", "[function]\nmode = \"daemon\"\n");
    let error = error_for(&text, "function.mode");
    assert!(error.message.contains("exec, stream"), "{}", error.message);
}

#[test]
fn bad_duration_is_rejected() {
    let text = MINIMAL.replace("[function]\n", "[function]\ntimeout = \"30\"\n");
    let error = error_for(&text, "function.timeout");
    assert!(
        error.message.contains("\"30s\""),
        "shows an example: {}",
        error.message
    );
}

#[test]
fn timeout_over_an_hour_is_rejected() {
    let text = MINIMAL.replace("[function]\n", "[function]\ntimeout = \"2h\"\n");
    error_for(&text, "function.timeout");
}

#[test]
fn duration_given_as_integer_is_a_type_error() {
    let text = MINIMAL.replace("[function]\n", "[function]\ntimeout = 30\n");
    let error = error_for(&text, "function.timeout");
    assert!(
        error.message.contains("duration string"),
        "{}",
        error.message
    );
}

#[test]
fn bad_size_is_rejected() {
    let text = MINIMAL.replace("[function]\n", "[function]\nmemory = \"lots\"\n");
    let error = error_for(&text, "function.memory");
    assert!(
        error.message.contains("512MiB"),
        "shows an example: {}",
        error.message
    );
}

#[test]
fn memory_below_minimum_is_rejected() {
    let text = MINIMAL.replace("[function]\n", "[function]\nmemory = \"8MiB\"\n");
    let error = error_for(&text, "function.memory");
    assert!(
        error.message.contains("at least 16MiB"),
        "{}",
        error.message
    );
}

#[test]
fn open_files_out_of_range() {
    let text = MINIMAL.replace("[function]\n", "[function]\nopen_files = 8\n");
    let error = error_for(&text, "function.open_files");
    assert!(error.message.contains("16 to 1048576"), "{}", error.message);
}

#[test]
fn max_processes_out_of_range() {
    let text = MINIMAL.replace("[function]\n", "[function]\nmax_processes = 0\n");
    let error = error_for(&text, "function.max_processes");
    assert!(error.message.contains("1 to 65536"), "{}", error.message);
}

#[test]
fn network_must_be_a_boolean() {
    let text = MINIMAL.replace("[function]\n", "[function]\nnetwork = \"no\"\n");
    let error = error_for(&text, "function.network");
    assert!(error.message.contains("bool"), "{}", error.message);
}

#[test]
fn max_attempts_out_of_range() {
    let text = MINIMAL.replace("[function]\n", "[function]\nmax_attempts = 0\n");
    error_for(&text, "function.max_attempts");
}

#[test]
fn reserved_env_name_is_rejected() {
    let error = error_for(
        &minimal_with("[function.env]\nSLUICE_JOB = \"x\""),
        "function.env.SLUICE_JOB",
    );
    assert!(error.message.contains("reserved"), "{}", error.message);
}

#[test]
fn invalid_env_name_is_rejected() {
    error_for(
        &minimal_with("[function.env]\n\"1BAD\" = \"x\""),
        "function.env.1BAD",
    );
}

#[test]
fn batch_bytes_out_of_range() {
    let error = error_for(
        &minimal_with("[batch]\nmax_bytes = \"2GiB\""),
        "batch.max_bytes",
    );
    assert!(error.message.contains("1KiB to 1GiB"), "{}", error.message);
}

#[test]
fn max_instances_below_min_instances() {
    let error = error_for(
        &minimal_with("[scaling]\nmin_instances = 3\nmax_instances = 2"),
        "scaling.max_instances",
    );
    assert!(error.message.contains("min_instances"), "{}", error.message);
}

#[test]
fn max_instances_above_limit() {
    error_for(
        &minimal_with("[scaling]\nmax_instances = 1000"),
        "scaling.max_instances",
    );
}

#[test]
fn missing_output_table_is_reported() {
    error_for(
        &minimal_replacing(
            "[output]\nurl = \"lake\"\nschema = { user_id = \"int64\" }\n",
            "",
        ),
        "output",
    );
}

#[test]
fn missing_output_url_is_reported() {
    error_for(&minimal_replacing("url = \"lake\"", ""), "output.url");
}

#[test]
fn unsupported_scheme_not_yet_built() {
    let error = error_for(
        &minimal_replacing("url = \"lake\"", "url = \"az://container/x\""),
        "output.url",
    );
    assert!(
        error.message.contains("not supported yet in this build"),
        "{}",
        error.message
    );
}

#[test]
fn unknown_scheme_lists_allowed() {
    let error = error_for(
        &minimal_replacing("url = \"lake\"", "url = \"http://example.com/x\""),
        "output.url",
    );
    assert!(
        error.message.contains("s3://bucket/prefix"),
        "{}",
        error.message
    );
}

#[test]
fn unknown_column_type_names_the_column() {
    let text = minimal_replacing(
        "schema = { user_id = \"int64\" }",
        "schema = { user_id = \"int64\", ts = \"datetime\" }",
    );
    let error = error_for(&text, "output.schema.ts");
    assert!(
        error.message.contains("timestamp_ms"),
        "lists the allowed types: {}",
        error.message
    );
}

#[test]
fn empty_schema_is_rejected() {
    error_for(
        &minimal_replacing("schema = { user_id = \"int64\" }", "schema = {}"),
        "output.schema",
    );
}

#[test]
fn schema_value_of_wrong_type_names_the_column() {
    error_for(
        &minimal_replacing(
            "schema = { user_id = \"int64\" }",
            "schema = { user_id = 64 }",
        ),
        "output.schema.user_id",
    );
}

#[test]
fn partition_by_undeclared_column() {
    let text = minimal_replacing("url = \"lake\"", "url = \"lake\"\npartition_by = [\"day\"]");
    let error = error_for(&text, "output.partition_by");
    assert!(error.message.contains("not declared"), "{}", error.message);
}

#[test]
fn partition_by_every_column() {
    let text = minimal_replacing(
        "url = \"lake\"",
        "url = \"lake\"\npartition_by = [\"user_id\"]",
    );
    let error = error_for(&text, "output.partition_by");
    assert!(error.message.contains("every column"), "{}", error.message);
}

#[test]
fn partition_by_duplicate() {
    let text = minimal_replacing(
        "url = \"lake\"\nschema = { user_id = \"int64\" }",
        "url = \"lake\"\npartition_by = [\"day\", \"day\"]\nschema = { user_id = \"int64\", day = \"date32\" }",
    );
    let error = error_for(&text, "output.partition_by");
    assert!(error.message.contains("twice"), "{}", error.message);
}

#[test]
fn bad_compression_lists_choices() {
    let text = minimal_replacing("url = \"lake\"", "url = \"lake\"\ncompression = \"gzip\"");
    let error = error_for(&text, "output.compression");
    assert!(
        error.message.contains("zstd, snappy, none"),
        "{}",
        error.message
    );
}

#[test]
fn negative_size_is_rejected() {
    let text = minimal_replacing("url = \"lake\"", "url = \"lake\"\nmax_file_size = -1");
    error_for(&text, "output.max_file_size");
}

#[test]
fn missing_env_var_in_dead_letter_url() {
    let error = error_for(
        &minimal_with("[dead_letter]\nurl = \"${DEAD_LETTERS}\""),
        "dead_letter.url",
    );
    assert!(error.message.contains("DEAD_LETTERS"), "{}", error.message);
}

#[test]
fn preload_is_parsed_for_a_python_script() {
    let text = minimal_replacing(
        "command = [\"python3\", \"transform.py\"]",
        "command = [\"python3\", \"transform.py\"]\npreload = [\"json\", \"pyarrow.parquet\"]",
    );
    let job = parse(&text).unwrap();
    assert_eq!(job.function.preload, ["json", "pyarrow.parquet"]);
    assert!(parse(MINIMAL).unwrap().function.preload.is_empty());
}

#[test]
fn preload_needs_a_python_script_command() {
    for command in [
        "[\"sh\", \"-c\", \"cat\"]",
        "[\"python3\", \"-m\", \"transform\"]",
        "[\"python3\"]",
    ] {
        let text = minimal_replacing(
            "command = [\"python3\", \"transform.py\"]",
            &format!("command = {command}\npreload = [\"json\"]"),
        );
        let error = error_for(&text, "function.preload");
        assert!(
            error.message.contains("runs a Python script"),
            "{}",
            error.message
        );
        assert!(error.to_string().contains("job.toml"), "{error}");
    }
}

#[test]
fn preload_names_must_be_modules_listed_once() {
    for (preload, expected) in [
        ("[\"os; import sys\"]", "not a Python module name"),
        ("[\"json\", \"json\"]", "listed twice"),
        ("[]", "the list is empty"),
    ] {
        let text = minimal_replacing(
            "command = [\"python3\", \"transform.py\"]",
            &format!("command = [\"python3\", \"transform.py\"]\npreload = {preload}"),
        );
        let error = error_for(&text, "function.preload");
        assert!(error.message.contains(expected), "{}", error.message);
    }
}
