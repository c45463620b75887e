//! Dead letters as persistent messages in an AMQP queue (`[dead_letter.amqp]`): the AMQP
//! connector's [`LetterBroker`] (see [`crate::dead_letter`]).
//!
//! Sending: one connection (named `sluice-<job>-dead-letters`) with a channel in confirm
//! mode; the queue is declared durable (unless `declare = false`: then it must exist).
//! Each letter is published to the default exchange with the queue as routing key,
//! `mandatory` (an unroutable letter comes back instead of vanishing), persistent
//! (`delivery_mode = 2`), `message_id` = the letter's `id`, `content_type =
//! application/json`. [`AmqpDeadLetters`] returns only once the broker confirmed
//! every message — for a persistent message in a durable queue, once it is on disk. On
//! any failure the connection is dropped (a fresh one is opened by the next send) and the
//! caller sends every letter again, so a letter may be in the queue twice with the same
//! `message_id`.
//!
//! Reading back (`sluice dlq list|show|replay`): `basic.get` without auto-ack, at most
//! as many messages as the queue held when reading began (so letters that fail again
//! during a replay and come back to the queue are not read twice). `list` and `show`
//! close their channel afterwards, which returns every message to the queue; replay acks
//! each message only once its output is durable ([`PendingAmqpLetters::ack`]), and a
//! replay that stops or crashes before leaves the rest in the queue. The messages stay
//! unacknowledged on one channel for the whole replay, so a replay longer than the
//! broker's `consumer_timeout` (RabbitMQ: 30 minutes by default) loses that channel: its
//! acks fail, the replay stops, and the letters not yet acknowledged are back in the
//! queue (some replayed ones too, so their output may be written twice).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{parse_broker_url, redact_url};
use crate::dead_letter::{
    LetterBroker, LetterGroup, LetterPublisher, OutgoingLetter, PendingLetters, PublishError,
    ReadLettersError,
};
use crate::retry::Retry;

/// `[dead_letter.amqp]`: the queue dead letters go to. `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpDeadLetterConfig {
    /// `amqp://user:password@host:port/vhost`, `${ENV}` expanded (the AMQP trigger's when
    /// not given); show it only through [`AmqpDeadLetterConfig::redacted_url`].
    pub url: String,
    pub queue: String,
    /// Declare the queue (durable) before publishing.
    pub declare: bool,
}

impl AmqpDeadLetterConfig {
    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for AmqpDeadLetterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpDeadLetterConfig")
            .field("url", &self.redacted_url())
            .field("queue", &self.queue)
            .field("declare", &self.declare)
            .finish()
    }
}

#[async_trait]
impl LetterBroker for AmqpDeadLetterConfig {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn describe(&self) -> String {
        format!("amqp queue {} ({})", self.queue, self.redacted_url())
    }

    fn unit(&self) -> &'static str {
        "queues"
    }

    fn publisher(&self, job: &str) -> Box<dyn LetterPublisher> {
        Box::new(AmqpDeadLetters::new(job, self.clone()))
    }

    async fn read_pending(
        &self,
        job: &str,
        limit: Option<usize>,
    ) -> Result<Box<dyn PendingLetters>, ReadLettersError> {
        Ok(Box::new(PendingAmqpLetters::get(job, self, limit).await?))
    }
}

/// Bound on connecting, on each request, and on one whole send.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The publishing side of a queue destination; connected on the first send.
pub struct AmqpDeadLetters {
    job: String,
    spec: AmqpDeadLetterConfig,
    session: Option<(Connection, Channel)>,
}

impl AmqpDeadLetters {
    pub fn new(job: &str, spec: AmqpDeadLetterConfig) -> Self {
        Self {
            job: job.to_owned(),
            spec,
            session: None,
        }
    }

    async fn publish_all(&mut self, letters: &[OutgoingLetter<'_>]) -> Result<(), Failure> {
        let channel = self.channel().await?;
        let queue = short(&self.spec.queue)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut confirms = Vec::with_capacity(letters.len());
        for letter in letters {
            let mut headers = FieldTable::default();
            headers.insert(
                "sluice-job".into(),
                AMQPValue::LongString(LongString::from(self.job.as_str())),
            );
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(short(letter.id)?)
                .with_content_type("application/json".into())
                .with_timestamp(now)
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    ShortString::default(),
                    queue.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    letter.line.as_bytes(),
                    properties,
                )
                .await
                .map_err(|error| Failure::from_lapin("publish", &error))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            match confirm
                .await
                .map_err(|error| Failure::from_lapin("wait for the confirm", &error))?
            {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(returned)) => {
                    return Err(Failure::retry(format!(
                        "the broker could not route a letter to the queue ({}: was it deleted?)",
                        returned.reply_text
                    )));
                }
                Confirmation::Nack(_) => {
                    return Err(Failure::retry(
                        "the broker refused to store a letter (nack)".into(),
                    ));
                }
                Confirmation::NotRequested => {
                    return Err(Failure::retry("the channel is not in confirm mode".into()));
                }
            }
        }
        Ok(())
    }

    /// The confirm-mode channel, opening a connection and declaring the queue when there
    /// is none yet.
    async fn channel(&mut self) -> Result<Channel, Failure> {
        if let Some((connection, channel)) = &self.session
            && connection.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let name = format!("sluice-{}-dead-letters", self.job);
        let (connection, channel) = open_channel(&self.spec, &name).await?;
        step(
            "enable publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let options = QueueDeclareOptions {
            passive: !self.spec.declare,
            durable: true,
            ..QueueDeclareOptions::default()
        };
        step(
            if self.spec.declare {
                "declare the queue"
            } else {
                "find the queue"
            },
            channel.queue_declare(short(&self.spec.queue)?, options, FieldTable::default()),
        )
        .await?;
        self.session = Some((connection, channel.clone()));
        Ok(channel)
    }
}

#[async_trait]
impl LetterPublisher for AmqpDeadLetters {
    /// Publishes every letter and waits for the broker's confirms. See the module docs.
    async fn publish(&mut self, letters: &[OutgoingLetter<'_>]) -> Result<(), PublishError> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.publish_all(letters))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::retry(format!(
                    "no confirm within {REQUEST_TIMEOUT:?}"
                )))
            });
        result.map_err(|failure| {
            // The channel may hold unconfirmed messages or be closed: start afresh.
            self.session = None;
            PublishError {
                verb: "publish",
                destination: format!("amqp queue {}", self.spec.queue),
                message: failure.message,
                retry: Retry::when(failure.retryable),
            }
        })
    }
}

async fn open_channel(
    spec: &AmqpDeadLetterConfig,
    connection_name: &str,
) -> Result<(Connection, Channel), Failure> {
    let uri = parse_broker_url(&spec.url).map_err(|error| Failure {
        message: error.to_string(),
        retryable: false,
    })?;
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let connection = step("connect", Connection::connect_uri(uri, properties)).await?;
    let channel = step("open a channel", connection.create_channel()).await?;
    Ok((connection, channel))
}

/// Why a send or read failed, and whether trying again can help.
#[derive(Debug)]
struct Failure {
    message: String,
    retryable: bool,
}

impl Failure {
    fn retry(message: String) -> Self {
        Self {
            message,
            retryable: true,
        }
    }

    /// What the user must fix ([`super::session::is_user_error`]) is not retried.
    fn from_lapin(what: &str, error: &lapin::Error) -> Self {
        Self {
            message: format!("could not {what}: {error}"),
            retryable: !super::session::is_user_error(error),
        }
    }
}

async fn step<T>(what: &str, future: impl Future<Output = lapin::Result<T>>) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure::from_lapin(what, &error)),
        Err(_) => Err(Failure::retry(format!(
            "could not {what} within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

fn short(text: &str) -> Result<ShortString, Failure> {
    ShortString::try_new(text).map_err(|error| Failure {
        message: format!("`{text}`: {error}"),
        retryable: false,
    })
}

/// Letters taken from the queue without acknowledging them, in queue order: each with
/// its number (from 1) and delivery tag.
pub struct PendingAmqpLetters {
    pub queue: String,
    /// One group: the queue.
    groups: Vec<LetterGroup>,
    tags: Vec<u64>,
    connection: Connection,
    channel: Channel,
}

#[async_trait]
impl PendingLetters for PendingAmqpLetters {
    fn groups(&self) -> &[LetterGroup] {
        &self.groups
    }

    async fn retire(&self, _group: &str, first: u64, last: u64) -> Result<(), String> {
        self.ack(first, last).await.map_err(|e| e.to_string())
    }

    async fn release(&self) {
        let _ =
            tokio::time::timeout(REQUEST_TIMEOUT, self.connection.close(200, "OK".into())).await;
    }
}

fn broker_error(queue: &str, failure: Failure) -> ReadLettersError {
    ReadLettersError::Broker {
        destination: format!("amqp queue {queue}"),
        message: failure.message,
    }
}

impl PendingAmqpLetters {
    /// Takes up to `limit` of the messages the queue holds now (all with `None`), without
    /// acknowledging them.
    pub async fn get(
        job: &str,
        spec: &AmqpDeadLetterConfig,
        limit: Option<usize>,
    ) -> Result<Self, ReadLettersError> {
        let queue = spec.queue.clone();
        let failed = |failure: Failure| broker_error(&queue, failure);
        let name = format!("sluice-{job}-dead-letters-reader");
        let (connection, channel) = open_channel(spec, &name).await.map_err(failed)?;
        let queue_name = short(&queue).map_err(failed)?;
        // A queue Sluice declares may not exist yet (it is declared on the first send):
        // declaring it here is the same idempotent declaration, and shows it empty.
        let declared = step(
            "find the queue",
            channel.queue_declare(
                queue_name.clone(),
                QueueDeclareOptions {
                    passive: !spec.declare,
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(failed)?;
        let available = declared.message_count() as usize;
        let wanted = limit.map_or(available, |limit| limit.min(available));
        let mut letters = Vec::with_capacity(wanted);
        let mut tags = Vec::with_capacity(wanted);
        while letters.len() < wanted {
            let got = step(
                "get a message",
                channel.basic_get(queue_name.clone(), BasicGetOptions { no_ack: false }),
            )
            .await
            .map_err(failed)?;
            let Some(message) = got else { break };
            let number = letters.len() as u64 + 1;
            let letter = serde_json::from_slice(&message.delivery.data).map_err(|error| {
                ReadLettersError::Malformed {
                    destination: format!("amqp queue {queue}"),
                    position: format!("message {number}"),
                    message: error.to_string(),
                }
            })?;
            tags.push(message.delivery.delivery_tag);
            letters.push((number, letter));
        }
        Ok(Self {
            groups: vec![LetterGroup {
                name: queue.clone(),
                letters,
            }],
            queue,
            tags,
            connection,
            channel,
        })
    }

    /// Acknowledges letters `first..=last` (their numbers): their output is durable, they
    /// leave the queue.
    pub async fn ack(&self, first: u64, last: u64) -> Result<(), ReadLettersError> {
        for number in first..=last {
            let Some(&tag) = number
                .checked_sub(1)
                .and_then(|i| self.tags.get(usize::try_from(i).ok()?))
            else {
                continue;
            };
            step(
                "acknowledge a replayed letter",
                self.channel.basic_ack(tag, BasicAckOptions::default()),
            )
            .await
            .map_err(|failure| broker_error(&self.queue, failure))?;
        }
        Ok(())
    }
}
