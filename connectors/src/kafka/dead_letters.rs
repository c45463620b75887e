//! Dead letters as messages of a Kafka topic (`[dead_letter.kafka]`): the Kafka
//! connector's [`LetterBroker`] (see [`crate::dead_letter`]).
//!
//! Sending: one message per letter — value the letter's JSON object, key its `id`, header
//! `sluice-job` — through an idempotent producer with `acks=all`; [`KafkaDeadLetters`]
//! returns only once the broker acknowledged every message (or one failed: then the
//! caller sends them all again, so a letter may be in the topic twice with the same key).
//!
//! Reading back (`sluice dlq list|show|replay`): the pending letters of a partition are
//! those at or after the offset committed by the dead-letter group
//! (`dead_letter.kafka.group`; from the beginning when it has none), up to the end of the
//! partition when reading starts. Reading never commits; replay commits a partition's
//! offset past a letter only once the letter's output is durable
//! ([`PendingKafkaLetters::commit`]). The consumer only uses `assign`, so it never joins
//! the group (offsets are committed from outside it, which brokers accept while the group
//! has no members).
//!
//! Threads: librdkafka calls block; reading and committing run under `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::dead_letter::{
    LetterBroker, LetterGroup, LetterPublisher, OutgoingLetter, PendingLetters, PublishError,
    ReadLettersError,
};
use crate::retry::Retry;

/// `[dead_letter.kafka]`: the topic dead letters go to. `Debug` shows the names of the
/// `options`, never their values (they may hold credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaDeadLetterConfig {
    /// Bootstrap servers, `${ENV}` expanded (the Kafka trigger's when not given).
    pub brokers: String,
    pub topic: String,
    /// The group `sluice dlq replay` commits replayed letters to.
    pub group: String,
    /// Extra librdkafka properties, `${ENV}` expanded.
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaDeadLetterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDeadLetterConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl LetterBroker for KafkaDeadLetterConfig {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        format!("kafka topic {} ({})", self.topic, self.brokers)
    }

    fn unit(&self) -> &'static str {
        "partitions"
    }

    fn publisher(&self, job: &str) -> Box<dyn LetterPublisher> {
        Box::new(KafkaDeadLetters::new(job, self.clone()))
    }

    async fn read_pending(
        &self,
        job: &str,
        _limit: Option<usize>,
    ) -> Result<Box<dyn PendingLetters>, ReadLettersError> {
        Ok(Box::new(PendingKafkaLetters::read(job, self).await?))
    }
}

/// librdkafka properties Sluice sets itself; `dead_letter.kafka.options` may not.
pub const MANAGED_PRODUCER_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

/// Defaults `options` may override: how long a letter may take to be acknowledged before
/// the flush fails (and is retried).
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[("message.timeout.ms", "30000"), ("linger.ms", "5")];

/// A read of pending letters that makes no progress for this long fails.
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of metadata and offset requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The producer side of a topic destination; connected on the first send.
pub struct KafkaDeadLetters {
    job: String,
    spec: KafkaDeadLetterConfig,
    producer: Option<FutureProducer>,
}

impl KafkaDeadLetters {
    pub fn new(job: &str, spec: KafkaDeadLetterConfig) -> Self {
        Self {
            job: job.to_owned(),
            spec,
            producer: None,
        }
    }

    fn producer(&mut self) -> Result<&FutureProducer, PublishError> {
        let producer = match self.producer.take() {
            Some(producer) => producer,
            None => {
                let mut config = client_config(&self.job, &self.spec, PRODUCER_DEFAULTS);
                config.set("acks", "all").set("enable.idempotence", "true");
                // Creating a client starts librdkafka's threads: kept off the runtime's
                // other tasks.
                tokio::task::block_in_place(|| config.create()).map_err(|error| PublishError {
                    verb: "produce",
                    destination: format!("kafka topic {}", self.spec.topic),
                    message: format!("cannot create the kafka producer for dead letters: {error}"),
                    retry: Retry::Permanent,
                })?
            }
        };
        Ok(self.producer.insert(producer))
    }
}

#[async_trait]
impl LetterPublisher for KafkaDeadLetters {
    /// Produces every letter and waits until the broker acknowledged each (`acks=all`).
    async fn publish(&mut self, letters: &[OutgoingLetter<'_>]) -> Result<(), PublishError> {
        let topic = self.spec.topic.clone();
        let job = self.job.clone();
        let producer = self.producer()?;
        let sends = letters.iter().map(|letter| {
            let record = FutureRecord::to(&topic)
                .key(letter.id)
                .payload(letter.line)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "sluice-job",
                    value: Some(job.as_str()),
                }));
            producer.send(record, Duration::from_secs(30))
        });
        let failed = futures::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(Result::err)
            .map(|(error, _)| error.to_string())
            .next();
        match failed {
            None => Ok(()),
            Some(message) => Err(PublishError {
                verb: "produce",
                destination: format!("kafka topic {topic}"),
                message,
                retry: Retry::Transient,
            }),
        }
    }
}

/// The client configuration shared by the producer and the reader.
fn client_config(
    job: &str,
    spec: &KafkaDeadLetterConfig,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in &spec.options {
        config.set(key.as_str(), value.as_str());
    }
    config
        .set("bootstrap.servers", spec.brokers.as_str())
        .set("client.id", format!("sluice-{job}-dead-letters"))
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    config
}

/// The pending letters of a topic destination, per partition in offset order (as
/// groups `<topic>/<partition>` whose lines are offsets + 1), and the consumer that
/// commits them once replayed.
pub struct PendingKafkaLetters {
    pub topic: String,
    groups: Vec<LetterGroup>,
    consumer: Arc<BaseConsumer>,
    group: String,
}

#[async_trait]
impl PendingLetters for PendingKafkaLetters {
    fn groups(&self) -> &[LetterGroup] {
        &self.groups
    }

    async fn retire(&self, group: &str, _first: u64, last: u64) -> Result<(), String> {
        let Some(partition) = group
            .strip_prefix(&format!("{}/", self.topic))
            .and_then(|p| p.parse().ok())
        else {
            return Ok(());
        };
        // Lines are offsets + 1: `last` is the next offset to read.
        self.commit(partition, last as i64)
            .await
            .map_err(|e| e.to_string())
    }
}

impl PendingKafkaLetters {
    /// Reads every pending letter (see the module docs); commits nothing.
    pub async fn read(job: &str, spec: &KafkaDeadLetterConfig) -> Result<Self, ReadLettersError> {
        let (job, spec) = (job.to_owned(), spec.clone());
        let topic = spec.topic.clone();
        // Metadata, offsets and polling block: off the runtime.
        tokio::task::spawn_blocking(move || read_blocking(&job, &spec))
            .await
            .map_err(|error| broker_error(&topic, format!("reading task failed: {error}")))?
    }

    /// Commits `next` as the dead-letter group's offset of `partition`: every letter
    /// before it was replayed.
    pub async fn commit(&self, partition: i32, next: i64) -> Result<(), ReadLettersError> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, partition, Offset::Offset(next))
            .map_err(|error| self.error(error))?;
        let consumer = self.consumer.clone();
        let group = self.group.clone();
        let topic = self.topic.clone();
        // A synchronous commit waits for the broker: off the runtime.
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|error| broker_error(&topic, format!("commit task failed: {error}")))?
            .map_err(|error| {
                broker_error(
                    &topic,
                    format!("group {group} refused an offset commit: {error}"),
                )
            })
    }

    fn error(&self, error: KafkaError) -> ReadLettersError {
        broker_error(&self.topic, error.to_string())
    }
}

fn broker_error(topic: &str, message: String) -> ReadLettersError {
    ReadLettersError::Broker {
        destination: format!("kafka topic {topic}"),
        message,
    }
}

fn read_blocking(
    job: &str,
    spec: &KafkaDeadLetterConfig,
) -> Result<PendingKafkaLetters, ReadLettersError> {
    let topic = spec.topic.clone();
    let failed = |message: String| broker_error(&topic, message);
    let mut config = client_config(job, spec, &[]);
    config
        .set("group.id", spec.group.as_str())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|error| failed(format!("cannot create a consumer: {error}")))?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)
        .map_err(|error| failed(format!("cannot read the topic's metadata: {error}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(failed(
            "the topic does not exist or has no partitions".into(),
        ));
    }
    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        list.add_partition(&topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(|error| {
            failed(format!(
                "cannot read the committed offsets of group {}: {error}",
                spec.group
            ))
        })?;
    let mut assignment = TopicPartitionList::new();
    for element in committed.elements_for_topic(&topic) {
        let start = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        assignment
            .add_partition_offset(&topic, element.partition(), start)
            .map_err(|error| failed(error.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|error| failed(format!("cannot assign the partitions: {error}")))?;
    let mut letters: BTreeMap<i32, Vec<(i64, Value)>> =
        partitions.iter().map(|&p| (p, Vec::new())).collect();
    let mut at_end = std::collections::BTreeSet::new();
    let mut last_progress = Instant::now();
    while at_end.len() < partitions.len() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let (partition, offset) = (message.partition(), message.offset());
                let letter = serde_json::from_slice(message.payload().unwrap_or_default())
                    .map_err(|error| ReadLettersError::Malformed {
                        destination: format!("kafka topic {topic}"),
                        position: format!("partition {partition} offset {offset}"),
                        message: error.to_string(),
                    })?;
                letters.entry(partition).or_default().push((offset, letter));
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                last_progress = Instant::now();
                at_end.insert(partition);
            }
            Some(Err(error)) => {
                tracing::debug!(topic, %error, "error while reading dead letters; librdkafka retries");
            }
        }
        if last_progress.elapsed() > READ_STALL_TIMEOUT {
            return Err(failed(format!(
                "reading made no progress for {READ_STALL_TIMEOUT:?}"
            )));
        }
    }
    // Nothing more is read; commits name their offsets explicitly.
    consumer
        .unassign()
        .map_err(|error| failed(format!("cannot stop reading: {error}")))?;
    let groups = letters
        .into_iter()
        .map(|(partition, letters)| LetterGroup {
            name: format!("{topic}/{partition}"),
            letters: letters
                .into_iter()
                .map(|(offset, letter)| (offset as u64 + 1, letter))
                .collect(),
        })
        .collect();
    Ok(PendingKafkaLetters {
        topic,
        groups,
        consumer: Arc::new(consumer),
        group: spec.group.clone(),
    })
}
