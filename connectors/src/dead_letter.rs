//! Dead-letter destinations that are brokers: what the platform's dead-letter code needs
//! from a connector that can keep dead letters as messages (a Kafka topic, an AMQP queue).
//!
//! The platform makes each dead letter (one JSON object: the record byte for byte, its
//! error, its origin) and decides when to send; a connector only moves the letters to and
//! from its broker:
//!
//! | step | trait | what the connector does |
//! |---|---|---|
//! | `flush` before an ack | [`LetterPublisher::publish`] | sends every letter, returns once the broker made each durable |
//! | `sluice dlq list/show` | [`LetterBroker::read_pending`] then [`PendingLetters::release`] | reads the pending letters, changing nothing |
//! | `sluice dlq replay` | [`PendingLetters::retire`] | marks letters replayed once their output is durable |
//!
//! A connector's dead-letter configuration ([`crate::kafka::KafkaDeadLetterConfig`],
//! [`crate::amqp::AmqpDeadLetterConfig`]) implements [`LetterBroker`]; it is checked from
//! its `[dead_letter.<kind>]` table by the connector (a
//! [`crate::registry::DeadLetterTable`], listed in
//! [`crate::registry::supported_dead_letter_brokers`]).

use async_trait::async_trait;
use serde_json::Value;

use crate::retry::{Classify, Retry};

/// One dead letter as a broker receives it.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingLetter<'a> {
    /// The letter's stable identity: sent as the Kafka key / AMQP `message_id`, so
    /// duplicates of an at-least-once send can be recognised.
    pub id: &'a str,
    /// The letter's JSON object, one line: the message body, byte for byte.
    pub line: &'a str,
}

/// Why sending letters failed. Every letter of the call counts as not sent.
#[derive(Debug, thiserror::Error)]
#[error("could not {verb} dead letters to {destination}: {message}")]
pub struct PublishError {
    /// `produce` or `publish`, as the broker's vocabulary says.
    pub verb: &'static str,
    /// E.g. `kafka topic clicks-dead`.
    pub destination: String,
    pub message: String,
    pub retry: Retry,
}

impl Classify for PublishError {
    fn retry(&self) -> Retry {
        self.retry
    }
}

/// Why reading letters back failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadLettersError {
    #[error("{destination}: {message}")]
    Broker {
        destination: String,
        message: String,
    },
    #[error("{destination} {position}: {message} (not a dead letter written by sluice?)")]
    Malformed {
        destination: String,
        /// Where the message is: `partition 0 offset 7`, `message 3`.
        position: String,
        message: String,
    },
}

/// The sending side of a broker destination; connects on the first send.
#[async_trait]
pub trait LetterPublisher: Send {
    /// Sends every letter and returns only once the broker made each durable. On error
    /// the caller sends them all again later, so a letter may reach the broker twice with
    /// the same id.
    async fn publish(&mut self, letters: &[OutgoingLetter<'_>]) -> Result<(), PublishError>;
}

/// Letters of a broker destination, in the broker's order, grouped by where they are kept
/// (a partition, the queue): each with its line there, from 1.
#[derive(Debug, Clone)]
pub struct LetterGroup {
    /// `<topic>/<partition>`; the queue.
    pub name: String,
    pub letters: Vec<(u64, Value)>,
}

/// Pending letters read from a broker, kept to acknowledge them.
#[async_trait]
pub trait PendingLetters: Send + Sync {
    /// The letters read, group by group.
    fn groups(&self) -> &[LetterGroup];

    /// Letters `first..=last` of `group` were replayed (their output is durable): they
    /// stop being pending.
    async fn retire(&self, group: &str, first: u64, last: u64) -> Result<(), String>;

    /// Gives back what was read and not retired (messages taken from a queue return to
    /// it). Reading without retiring changes nothing once this returns.
    async fn release(&self) {}
}

/// A broker destination for dead letters, as `[dead_letter.<kind>]` configures it.
#[async_trait]
pub trait LetterBroker: Send + Sync + std::fmt::Debug {
    /// For people: what and where, without secrets (`kafka topic t (host:9092)`).
    fn describe(&self) -> String;

    /// The configuration itself, for code that needs the concrete type (tests).
    fn as_any(&self) -> &dyn std::any::Any;

    /// What a [`LetterGroup`] of this destination is: `partitions`, `queues`.
    fn unit(&self) -> &'static str;

    /// A publisher for the letters of `job`; connects on its first send.
    fn publisher(&self, job: &str) -> Box<dyn LetterPublisher>;

    /// Reads the pending letters of `job` (at most `limit` where the broker hands them
    /// out one by one), acknowledging nothing.
    async fn read_pending(
        &self,
        job: &str,
        limit: Option<usize>,
    ) -> Result<Box<dyn PendingLetters>, ReadLettersError>;
}
