//! Dead letters in a Kafka topic and in an AMQP queue: a batch with poison records among
//! 1,000 is split until they are isolated, they land in the topic / queue with their
//! error (keyed by their origin), the rest commits; `sluice dlq list|show` changes
//! nothing, and `sluice dlq replay` after a fix lands them in the output and clears them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::amqp::AmqpAdmin;
use common::poison::{
    RECORDS, assert_exactly_once, assert_poison_letters, dlq, fix_and_replay, run_poisoned_job,
    stdout,
};
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Every message of partition 0 of `topic`, read from the beginning: (key, value).
fn topic_messages(env: &Env, topic: &str) -> Vec<(String, serde_json::Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", unique("reader"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut messages = Vec::new();
    loop {
        assert!(std::time::Instant::now() < deadline, "topic not read");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => messages.push((
                String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
                serde_json::from_slice(message.payload().unwrap()).unwrap(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return messages,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_land_in_a_kafka_topic_and_replay_lands_them() {
    let env = env();
    let dead_topic = unique("dead-letters");
    create_topic(&env, &dead_topic, 1).await;
    let job = run_poisoned_job(&env, "poison-to-topic", |job| {
        job.set("dead_letter.kafka", "topic", &dead_topic)
    })
    .await;

    // The 997 others are written once; the 3 are messages keyed by their origin.
    let rows = read_rows(&env, &job.prefix).await;
    assert_exactly_once(&rows, RECORDS - 3);
    let messages = topic_messages(&env, &dead_topic);
    for (key, letter) in &messages {
        assert_eq!(letter["id"].as_str(), Some(key.as_str()));
    }
    let letters: Vec<_> = messages.into_iter().map(|(_, letter)| letter).collect();
    assert_poison_letters(&letters, &job.topic);

    // list and show read without committing: twice the same answer.
    for _ in 0..2 {
        let listed = stdout(&dlq(&env, &job, "list"));
        assert!(
            listed.starts_with(&format!(
                "3 dead letters in 1 partitions at kafka topic {dead_topic}"
            )),
            "{listed}"
        );
    }
    let shown = stdout(&dlq(&env, &job, "show"));
    assert_eq!(shown.lines().count(), 3, "{shown}");

    fix_and_replay(&env, &job).await;
    let group = format!("sluice-{}-dead-letters", job.name);
    assert_eq!(committed(&env, &group, &dead_topic, 1).get(&0), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_land_in_an_amqp_queue_and_replay_lands_them() {
    let env = env();
    let queue = unique("dead-letters");
    let job = run_poisoned_job(&env, "poison-to-queue", |job| {
        job.set("dead_letter.amqp", "url", &env.amqp_url)
            .set("dead_letter.amqp", "queue", &queue)
    })
    .await;
    let admin = AmqpAdmin::connect(&env).await;
    assert_eq!(admin.counts(&queue).await, (3, 0), "3 letters in the queue");
    assert_exactly_once(&read_rows(&env, &job.prefix).await, RECORDS - 3);

    // list and show take the messages without acknowledging them: they stay queued.
    let listed = stdout(&dlq(&env, &job, "list"));
    assert!(
        listed.starts_with(&format!("3 dead letters in 1 queues at amqp queue {queue}")),
        "{listed}"
    );
    let shown = stdout(&dlq(&env, &job, "show"));
    let letters: Vec<serde_json::Value> = shown
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_poison_letters(&letters, &job.topic);
    wait_for(
        "the letters back in the queue",
        Duration::from_secs(10),
        async || admin.counts(&queue).await == (3, 0),
    )
    .await;

    fix_and_replay(&env, &job).await;
    assert_eq!(
        admin.counts(&queue).await,
        (0, 0),
        "replayed letters are acked"
    );
    admin.delete_queue(&queue).await;
}
