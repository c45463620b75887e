//! `[trigger.amqp]`: a full and a minimal spec, and each mistake naming its field.

use super::*;

const KAFKA_TRIGGER: &str = "[trigger.kafka]\nbrokers = \"localhost:9092\"\ntopic = \"clicks\"\n";

/// `MINIMAL` with the Kafka trigger replaced by `[trigger.amqp]` holding `body`.
fn with_amqp(body: &str) -> String {
    minimal_replacing(KAFKA_TRIGGER, &format!("[trigger.amqp]\n{body}\n"))
}

fn amqp_of(text: &str) -> AmqpSourceConfig {
    let job = parse(text).unwrap_or_else(|errors| panic!("{errors}"));
    match job.trigger.config::<AmqpSourceConfig>() {
        Some(amqp) => amqp.clone(),
        None => panic!("not an amqp trigger: {:?}", job.trigger),
    }
}

fn amqp_env(name: &str) -> Option<String> {
    match name {
        "AMQP_PASSWORD" => Some("rabbit-secret".into()),
        "AMQP_URL" => Some("amqp://app:url-secret@rabbit:5672/prod".into()),
        "AMQP_HOST" => Some("rabbit.internal".into()),
        _ => env(name),
    }
}

fn parse_amqp(text: &str) -> Result<JobSpec, SpecErrors> {
    parse_job(text, Path::new(FILE), Path::new(DIR), &amqp_env)
}

#[test]
fn full_amqp_trigger_parses() {
    let text = with_amqp(
        r#"url = "amqp://app:${AMQP_PASSWORD}@${AMQP_HOST}:5673/%2f"
queue = "clicks.v1"
declare = true
exchange = "events"
routing_keys = ["click.*", "click.#"]
prefetch = 2000"#,
    );
    let job = parse_amqp(&text).unwrap_or_else(|errors| panic!("{errors}"));
    let Some(amqp) = job
        .trigger
        .config::<sluice_connectors::amqp::AmqpSourceConfig>()
    else {
        panic!("not an amqp trigger: {:?}", job.trigger);
    };
    assert_eq!(
        amqp.url,
        "amqp://app:rabbit-secret@rabbit.internal:5673/%2f"
    );
    assert_eq!(amqp.queue, "clicks.v1");
    assert!(amqp.declare);
    assert_eq!(amqp.exchange.as_deref(), Some("events"));
    assert_eq!(amqp.routing_keys, vec!["click.*", "click.#"]);
    assert_eq!(amqp.prefetch, 2000);
    let shown = format!("{job:?}");
    assert!(!shown.contains("rabbit-secret"), "{shown}");
    assert!(
        shown.contains("amqp://app:***@rabbit.internal:5673/%2f"),
        "{shown}"
    );
}

#[test]
fn minimal_amqp_trigger_gets_defaults() {
    let amqp = amqp_of(&with_amqp(
        "url = \"amqp://guest:guest@localhost:5672/%2f\"\nqueue = \"clicks\"",
    ));
    assert_eq!(amqp.url, "amqp://guest:guest@localhost:5672/%2f");
    assert!(!amqp.declare);
    assert_eq!(amqp.exchange, None);
    assert!(amqp.routing_keys.is_empty());
    assert_eq!(amqp.prefetch, 10_000);
}

#[test]
fn whole_url_from_the_environment_is_accepted() {
    let job = parse_amqp(&with_amqp("url = \"${AMQP_URL}\"\nqueue = \"q\"")).unwrap();
    let Some(amqp) = job
        .trigger
        .config::<sluice_connectors::amqp::AmqpSourceConfig>()
    else {
        panic!("not an amqp trigger");
    };
    assert_eq!(amqp.url, "amqp://app:url-secret@rabbit:5672/prod");
    assert_eq!(amqp.redacted_url(), "amqp://app:***@rabbit:5672/prod");
}

#[test]
fn literal_password_is_rejected() {
    let error = error_for(
        &with_amqp("url = \"amqp://app:s3cret@rabbit:5672/%2f\"\nqueue = \"q\""),
        "trigger.amqp.url",
    );
    assert!(
        error.message.contains("${AMQP_PASSWORD}"),
        "{}",
        error.message
    );
    assert!(!error.message.contains("s3cret"), "{}", error.message);
    // guest with another password is not the default account.
    error_for(
        &with_amqp("url = \"amqp://guest:other@localhost\"\nqueue = \"q\""),
        "trigger.amqp.url",
    );
}

#[test]
fn bad_urls_name_the_field_without_the_password() {
    for url in [
        "amqps://app:${AMQP_PASSWORD}@rabbit/v",
        "http://rabbit:5672",
        "amqp://app:${AMQP_PASSWORD}@:5672/v",
        "rabbit:5672",
    ] {
        let errors =
            parse_amqp(&with_amqp(&format!("url = \"{url}\"\nqueue = \"q\""))).expect_err(url);
        let error = errors
            .for_field("trigger.amqp.url")
            .unwrap_or_else(|| panic!("{url}: {errors}"));
        assert!(
            !error.message.contains("rabbit-secret"),
            "{url}: {}",
            error.message
        );
    }
    let error = error_for(
        &with_amqp("url = \"amqp://app:${NO_SUCH_VAR}@rabbit\"\nqueue = \"q\""),
        "trigger.amqp.url",
    );
    assert!(error.message.contains("NO_SUCH_VAR"), "{}", error.message);
}

#[test]
fn missing_url_and_queue_are_reported_together() {
    let errors = errors(&with_amqp("prefetch = 10"));
    assert!(errors.for_field("trigger.amqp.url").is_some(), "{errors}");
    assert!(errors.for_field("trigger.amqp.queue").is_some(), "{errors}");
}

#[test]
fn bad_queue_names_are_rejected() {
    let url = "url = \"amqp://guest:guest@localhost\"";
    error_for(
        &with_amqp(&format!("{url}\nqueue = \"\"")),
        "trigger.amqp.queue",
    );
    let long = "q".repeat(256);
    let error = error_for(
        &with_amqp(&format!("{url}\nqueue = \"{long}\"")),
        "trigger.amqp.queue",
    );
    assert!(error.message.contains("255"), "{}", error.message);
    let error = error_for(
        &with_amqp(&format!("{url}\nqueue = \"amq.mine\"\ndeclare = true")),
        "trigger.amqp.queue",
    );
    assert!(error.message.contains("reserved"), "{}", error.message);
    // Consuming an existing amq.* queue is fine.
    amqp_of(&with_amqp(&format!("{url}\nqueue = \"amq.mine\"")));
}

#[test]
fn bindings_need_declare_and_an_exchange() {
    let base = "url = \"amqp://guest:guest@localhost\"\nqueue = \"q\"";
    let error = error_for(
        &with_amqp(&format!("{base}\nexchange = \"events\"")),
        "trigger.amqp.exchange",
    );
    assert!(
        error.message.contains("declare = true"),
        "{}",
        error.message
    );
    error_for(
        &with_amqp(&format!("{base}\ndeclare = true\nexchange = \"\"")),
        "trigger.amqp.exchange",
    );
    let error = error_for(
        &with_amqp(&format!("{base}\ndeclare = true\nrouting_keys = [\"a\"]")),
        "trigger.amqp.routing_keys",
    );
    assert!(error.message.contains("exchange"), "{}", error.message);
    let long = "k".repeat(256);
    error_for(
        &with_amqp(&format!(
            "{base}\ndeclare = true\nexchange = \"e\"\nrouting_keys = [\"{long}\"]"
        )),
        "trigger.amqp.routing_keys",
    );
}

#[test]
fn prefetch_out_of_range_is_rejected() {
    let base = "url = \"amqp://guest:guest@localhost\"\nqueue = \"q\"";
    for prefetch in ["0", "65536", "-1"] {
        let error = error_for(
            &with_amqp(&format!("{base}\nprefetch = {prefetch}")),
            "trigger.amqp.prefetch",
        );
        assert!(error.message.contains("1 to 65535"), "{}", error.message);
    }
    let error = error_for(
        &with_amqp(&format!("{base}\nprefetch = \"many\"")),
        "trigger.amqp.prefetch",
    );
    assert!(error.message.contains("integer"), "{}", error.message);
}

#[test]
fn unknown_amqp_field_is_rejected() {
    error_for(
        &with_amqp("url = \"amqp://guest:guest@localhost\"\nqueue = \"q\"\nauto_ack = true"),
        "trigger.amqp.auto_ack",
    );
}
