//! AMQP 0-9-1 source (RabbitMQ): one queue consumed with manual acknowledgements, through
//! lapin.
//!
//! Each [`AmqpSource`] is one consumer on the job's queue; several nodes running the same
//! job are competing consumers on it, with no protocol of Sluice's own. The source either
//! consumes an existing queue or declares it (durable) and binds it to an existing
//! exchange with the configured routing keys. Deliveries become [`Event`]s: the body as
//! payload, no key, the headers table as headers (strings and byte arrays as they are,
//! other values as text), the `timestamp` property as the timestamp, and an
//! [`Origin::Amqp`] with the queue, the source's sequence number, the delivery tag, the
//! `message_id` property, the exchange, the routing key and the redelivered flag.
//!
//! Delivery: at-least-once. A delivery is acknowledged only when the platform says its
//! output is durable — never automatically (`no_ack = false`) — so no message is lost; a
//! message delivered but not acknowledged before a stop, a crash or a lost connection is
//! delivered again, with `redelivered = true`.
//!
//! | outcome for the deliveries of a delta            | what the source sends                                                                 |
//! |--------------------------------------------------|----------------------------------------------------------------------------------------|
//! | committed: the platform calls `ack`              | `basic.ack` on their channel; one with `multiple = true` when every earlier unacknowledged delivery of that channel is covered, else one per delivery |
//! | batch to be retried (no ack)                     | nothing: the events stay with the platform, the deliveries stay unacknowledged         |
//! | the job stops (`close`)                          | `basic.cancel`, then the channels and the connection close: nothing is acknowledged, the broker requeues every unacknowledged delivery |
//! | the job crashes                                  | nothing: the broker sees the connection die and requeues                               |
//! | the connection or channel is lost                | nothing, ever, for that channel's deliveries: their tags die with it, the broker redelivers them, and later acks of their positions skip them |
//!
//! No `basic.nack` or `basic.reject` is ever sent: a delivery the platform cannot process
//! stays unacknowledged until the job stops, and the platform's dead-letter destination —
//! not the broker's — takes poison records.
//!
//! Positions: delivery tags restart at 1 on every channel, so the position of an event is
//! a sequence number the source assigns (from 1, growing across reconnections, split id
//! `amqp:<queue>`); see `inflight.rs` for the map back to tags.
//!
//! Prefetch: the broker stops delivering once `prefetch` deliveries are unacknowledged,
//! and the platform acknowledges only after a commit — when the open Parquet file is
//! closed, at the latest `output.max_file_age` after its first row or once it reaches
//! `output.max_file_size`. So `prefetch` bounds how many messages one commit can cover:
//! keep it above what arrives within `max_file_age` (and at least `batch.max_records`),
//! or intake pauses until the next commit. The default is 10,000.
//!
//! Backlog: ready messages in the queue (a passive `queue.declare` about once a second)
//! plus this source's unacknowledged deliveries.
//!
//! Reconnection: when the connection drops or the broker closes it, the source opens a new
//! connection after 100 ms, doubling up to 5 s between attempts, and goes on consuming;
//! each reconnection is logged with the job, queue and attempt count.
//!
//! Files: `table.rs` (the `[trigger.amqp]` and `[dead_letter.amqp]` tables of
//! `job.toml` and their checks), `config.rs` (trigger fields, URL parsing and
//! redaction), `rules.rs` (the rules of names and URL parameters, used by those checks
//! and by the source), `source.rs`
//! ([`AmqpSource`] and the [`Source`] contract), `session.rs` (the task that connects,
//! consumes and reconnects), `inflight.rs` (positions ↔ delivery tags), `dead_letters.rs`
//! (dead letters as persistent messages of a queue, `[dead_letter.amqp]`), `tests.rs`
//! (against a real RabbitMQ).
//!
//! [`Event`]: crate::Event
//! [`Origin::Amqp`]: crate::Origin::Amqp
//! [`Source`]: crate::Source

pub mod config;
pub mod dead_letters;
pub mod depth;
mod inflight;
pub mod rules;
mod session;
pub mod source;
pub mod table;
mod trigger;

// Against a real RabbitMQ: run with `--features amqp-tests`.
#[cfg(test)]
#[cfg(feature = "amqp-tests")]
mod tests;

pub use config::{AmqpSourceConfig, DEFAULT_PREFETCH, parse_broker_url, redact_url};
pub use dead_letters::AmqpDeadLetterConfig;
pub use rules::MAX_NAME_BYTES;
pub use source::AmqpSource;
