//! Kafka source: one topic consumed by one consumer group, through librdkafka (rdkafka).
//!
//! Each [`KafkaSource`] is one member of the job's consumer group. The group's broker
//! assigns it some of the topic's partitions; it turns their messages into [`Event`]s
//! (payload, key, headers, timestamp, and origin topic/partition/offset), in offset order
//! within a partition. Several nodes running the same job share the partitions through
//! the group, with no protocol of Sluice's own.
//!
//! Delivery: at-least-once. Offsets are committed to the group only when the platform
//! acknowledges positions — never automatically — so a message is never skipped; a
//! message delivered but not acknowledged before a restart, a crash or a rebalance is
//! delivered again (to this member or to the partition's new owner). Exactly-once output
//! is built on top by the platform (deterministic object names and commit markers).
//!
//! | outcome for a range `first..=last` of a partition   | what the source does                                   |
//! |------------------------------------------------------|--------------------------------------------------------|
//! | committed: the platform calls `ack`                  | commits offset `last + 1` to the group, synchronously  |
//! | batch to be retried (no ack)                         | nothing: the events stay with the platform             |
//! | the job stops or fails before the output is durable  | nothing committed: redelivered after restart/rebalance |
//!
//! Backlog: the sum, over assigned partitions, of the high watermark minus the committed
//! offset, from librdkafka's statistics (the high watermark carried by fetch responses).
//!
//! Files: `table.rs` (the `[trigger.kafka]` and `[dead_letter.kafka]` tables of
//! `job.toml` and their checks), `config.rs` (trigger fields → librdkafka configuration), `source.rs`
//! ([`KafkaSource`] and the [`Source`] contract), `poll_loop.rs` (the thread polling
//! librdkafka), `context.rs` (librdkafka callbacks: rebalances, statistics, logs),
//! `range.rs` (reading one offset range again and committing offsets from outside the
//! group, for the platform's recovery of unfinished ranges), `dead_letters.rs` (dead
//! letters as messages of a topic, `[dead_letter.kafka]`),
//! `tests.rs` (against librdkafka's in-process mock cluster).
//!
//! [`Event`]: crate::Event
//! [`Source`]: crate::Source

mod chunk;
pub mod config;
mod context;
pub mod dead_letters;
pub mod lag;
mod poll_loop;
pub mod range;
pub mod source;
pub mod table;
mod trigger;

#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_OPTIONS, KafkaSourceConfig, KafkaStart, MANAGED_OPTIONS, TOPIC_RULE, is_topic_name,
};
pub use dead_letters::{KafkaDeadLetterConfig, MANAGED_PRODUCER_OPTIONS};
pub use range::{KafkaPartitionLog, PartitionLog};
pub use source::KafkaSource;
