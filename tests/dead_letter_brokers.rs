//! Dead letters in a Kafka topic and in an AMQP queue: a batch with poison records among
//! 1,000 is split until they are isolated, they land in the topic / queue with their
//! error (keyed by their origin), the rest commits; `sluice dlq list|show` changes
//! nothing, and `sluice dlq replay` after a fix lands them in the output and clears them.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::amqp::AmqpAdmin;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Refuses (exit 1) every batch holding one of the target ids, unless told `ok`.
const POISON: &str = r#"
import json, sys
import transform
def run_batch(lines, out):  # the example's SDK function, called directly on each record
    for line in lines:
        out.write(json.dumps(transform.transform(json.loads(line))) + "\n")
mode, targets = sys.argv[1], sys.argv[2].split(",")
lines = [l for l in sys.stdin.read().splitlines() if l]
if mode == "fail" and any(json.loads(l).get("event_id") in targets for l in lines):
    print("refusing this batch", file=sys.stderr)
    sys.exit(1)
run_batch(lines, sys.stdout)
"#;

const RECORDS: usize = 1000;
const POISONED: [usize; 3] = [17, 500, 998];

fn targets() -> String {
    POISONED
        .iter()
        .map(|&i| Click::numbered(i).event_id)
        .collect::<Vec<_>>()
        .join(",")
}

fn function(mode: &str) -> String {
    format!(
        "command = [\"python3\", \"poison.py\", \"{mode}\", \"{}\"]\nmode = \"exec\"\nmax_attempts = 2\nretry_backoff = \"100ms\"",
        targets()
    )
}

/// A Kafka topic of `RECORDS` clicks and a job on it with `dead_letter` as its
/// `[dead_letter…]` table; runs it until every offset is committed.
async fn run_poisoned_job(env: &Env, tag: &str, dead_letter: &str) -> JobDir {
    let topic = unique(tag);
    create_topic(env, &topic, 1).await;
    let payloads: Vec<_> = (0..RECORDS)
        .map(|i| (format!("k{i}"), Click::numbered(i).json()))
        .collect();
    let ends = produce(env, &topic, &payloads).await;
    let job = JobDir::new(env, &topic, &function("fail"), dead_letter);
    job.write("poison.py", POISON);
    let mut sluice = Sluice::run(env, &job, "run");
    wait_committed(env, &job, &mut sluice, &ends, Duration::from_secs(120)).await;
    sluice.terminate();
    assert!(sluice.wait(Duration::from_secs(10)).success());
    let logs = sluice.logs();
    assert!(
        logs.contains("splitting it to isolate the records at fault"),
        "no bisection logged:\n{logs}"
    );
    job
}

fn assert_exactly_once(rows: &[OutputRow], expected: usize) {
    let counts = count_ids(rows);
    assert_eq!(counts.len(), expected, "distinct ids");
    assert_eq!(rows.len(), expected, "duplicates");
}

/// The three letters carry the original record, its origin and its error.
fn assert_poison_letters(letters: &[serde_json::Value], topic: &str) {
    assert_eq!(letters.len(), 3, "{letters:?}");
    let mut offsets: Vec<i64> = letters
        .iter()
        .map(|l| l["origin"]["offset"].as_i64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(offsets, vec![17, 500, 998]);
    for letter in letters {
        let offset = letter["origin"]["offset"].as_i64().unwrap();
        assert_eq!(letter["id"], format!("kafka:{topic}/0/{offset}"));
        assert_eq!(letter["attempts"], 2);
        assert_eq!(letter["key"], format!("k{offset}"));
        assert_eq!(letter["headers"]["source"], "e2e");
        let payload: serde_json::Value =
            serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["event_id"],
            Click::numbered(offset as usize).event_id
        );
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("refusing this batch"), "{error}");
    }
}

fn dlq(env: &Env, job: &JobDir, verb: &str) -> Output {
    let output = std::process::Command::new(sluice_binary())
        .args(["dlq", verb])
        .arg(job.path())
        .env("AWS_ACCESS_KEY_ID", &env.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &env.secret_key)
        .env("AWS_REGION", &env.region)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sluice dlq {verb}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fixes the function and replays: the three land in the output once, nothing is left.
async fn fix_and_replay(env: &Env, job: &JobDir) {
    let toml = std::fs::read_to_string(job.path().join("job.toml")).unwrap();
    job.write(
        "job.toml",
        &toml.replace(&function("fail"), &function("ok")),
    );
    let replay = dlq(env, job, "replay");
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(
        stderr.contains("replayed 3 dead letters: 3 rows written, 0 failed again"),
        "{stderr}"
    );
    assert_exactly_once(&read_rows(env, &job.prefix).await, RECORDS);
    let listed = stdout(&dlq(env, job, "list"));
    assert!(listed.starts_with("0 dead letters"), "{listed}");
}

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
    let job = run_poisoned_job(
        &env,
        "poison-to-topic",
        &format!("[dead_letter.kafka]\ntopic = \"{dead_topic}\""),
    )
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
    let job = run_poisoned_job(
        &env,
        "poison-to-queue",
        &format!(
            "[dead_letter.amqp]\nurl = \"{}\"\nqueue = \"{queue}\"",
            env.amqp_url
        ),
    )
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
