//! `[dead_letter]`: a store URL, a Kafka topic, an AMQP queue, defaults taken from the
//! trigger, and each mistake naming its field.

use super::*;

fn dead_letter_of(text: &str) -> DeadLetterSpec {
    let job = parse(text).unwrap_or_else(|errors| panic!("{errors}"));
    job.dead_letter.expect("a dead-letter destination")
}

#[test]
fn kafka_dead_letters_take_the_triggers_brokers_and_a_default_group() {
    let spec = dead_letter_of(&minimal_with(
        "[dead_letter.kafka]\ntopic = \"clicks-dead\"\n[dead_letter.kafka.options]\n\"message.timeout.ms\" = \"5000\"",
    ));
    assert_eq!(
        spec.broker_config::<KafkaDeadLetterConfig>(),
        Some(&KafkaDeadLetterConfig {
            brokers: "localhost:9092".into(),
            topic: "clicks-dead".into(),
            group: "sluice-clicks-dead-letters".into(),
            options: [("message.timeout.ms".to_owned(), "5000".to_owned())].into(),
        })
    );
}

#[test]
fn kafka_dead_letters_with_their_own_brokers_and_group() {
    let spec = dead_letter_of(&minimal_with(
        "[dead_letter.kafka]\nbrokers = \"${KAFKA_BROKERS}\"\ntopic = \"dead\"\ngroup = \"replays\"",
    ));
    let Some(kafka) = spec.broker_config::<KafkaDeadLetterConfig>() else {
        panic!("{spec:?}")
    };
    assert_eq!(kafka.brokers, "kafka-1:9092,kafka-2:9092");
    assert_eq!(kafka.group, "replays");
}

#[test]
fn amqp_dead_letters_need_a_url_when_the_trigger_is_not_amqp() {
    let error = error_for(
        &minimal_with("[dead_letter.amqp]\nqueue = \"dead\""),
        "dead_letter.amqp.url",
    );
    assert!(error.message.contains("required"), "{}", error.message);
    let spec = dead_letter_of(&minimal_with(
        "[dead_letter.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nqueue = \"dead\"",
    ));
    let Some(amqp) = spec.broker_config::<AmqpDeadLetterConfig>() else {
        panic!("{spec:?}")
    };
    assert_eq!(amqp.queue, "dead");
    assert!(amqp.declare, "declared by default");
}

#[test]
fn amqp_dead_letters_take_the_triggers_url() {
    let text = minimal_replacing(
        "[trigger.kafka]\nbrokers = \"localhost:9092\"\ntopic = \"clicks\"\n",
        "[trigger.amqp]\nurl = \"amqp://guest:guest@rabbit:5672/%2f\"\nqueue = \"clicks\"\n",
    );
    let spec = dead_letter_of(&format!(
        "{text}\n[dead_letter.amqp]\nqueue = \"clicks-dead\"\ndeclare = false"
    ));
    let Some(amqp) = spec.broker_config::<AmqpDeadLetterConfig>() else {
        panic!("{spec:?}")
    };
    assert_eq!(amqp.url, "amqp://guest:guest@rabbit:5672/%2f");
    assert!(!amqp.declare);
    let error = error_for(
        &format!("{text}\n[dead_letter.amqp]\nqueue = \"clicks\""),
        "dead_letter.amqp.queue",
    );
    assert!(error.message.contains("of their own"), "{}", error.message);
}

#[test]
fn only_one_destination_may_be_declared() {
    let error = error_for(
        &minimal_with("[dead_letter]\nurl = \"dead\"\n[dead_letter.kafka]\ntopic = \"dead\""),
        "dead_letter",
    );
    assert!(
        error.message.contains("url and [dead_letter.kafka]"),
        "{}",
        error.message
    );
}

#[test]
fn broker_mistakes_name_their_fields() {
    error_for(
        &minimal_with("[dead_letter.kafka]\ntopic = \"no spaces\""),
        "dead_letter.kafka.topic",
    );
    error_for(
        &minimal_with("[dead_letter.kafka]\nbrokers = \"nohost\"\ntopic = \"dead\""),
        "dead_letter.kafka.brokers",
    );
    error_for(
        &minimal_with("[dead_letter.kafka]\ntopic = \"clicks\""),
        "dead_letter.kafka.topic",
    );
    let error = error_for(
        &minimal_with(
            "[dead_letter.kafka]\ntopic = \"dead\"\n[dead_letter.kafka.options]\nacks = \"1\"",
        ),
        "dead_letter.kafka.options.acks",
    );
    assert!(error.message.contains("set by sluice"), "{}", error.message);
    error_for(
        &minimal_with("[dead_letter.amqp]\nurl = \"amqp://app:hunter2@rabbit/%2f\"\nqueue = \"d\""),
        "dead_letter.amqp.url",
    );
    error_for(
        &minimal_with("[dead_letter.amqp]\nurl = \"amqp://guest:guest@rabbit/%2f\""),
        "dead_letter.amqp.queue",
    );
    error_for(
        &minimal_with("[dead_letter.kafka]\ntopic = \"dead\"\nretries = 3"),
        "dead_letter.kafka.retries",
    );
}
