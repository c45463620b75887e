//! Exactly-once Parquet output for Kafka partitions and object versions: the commit
//! protocol and recovery.
//!
//! Per split (a Kafka partition, or one version of an input object) and commit, a range
//! of positions `first..=last` (offsets, or lines) is written as:
//! (a) an intent marker listing the objects it will write (create-only), (b) the objects,
//! named from the range, (c) a commit marker (create-only), (d) the group's offsets
//! (`last + 1`), (e) older markers deleted. On start, recovery ([`recover_partitions`],
//! [`recover_objects`]; `crate::trigger::recover` picks the one the trigger needs) writes
//! every range with an intent and no commit marker again with the same boundaries (so
//! the same names), deletes what the interrupted attempt wrote and the redo did not,
//! commits it, and moves the group's offsets up to the committed ranges. While a job runs, records a commit
//! marker covers are skipped. `design.md` beside this file has the state machine and a
//! crash analysis of every step.
//!
//! The module never looks at the job's trigger: what it needs of it (the topic, where
//! input objects are) is passed in by `crate::trigger`.
//!
//! Files: `names.rs` (every name from a range), `marker.rs` (markers in the store),
//! `committer.rs` (the steps as the pipeline drives them, `Staged` → `Committed`),
//! `recovery.rs` (recovery on start), `object_recovery.rs` (the same for object ranges),
//! `message_ids.rs` (AMQP queues, which have no ranges: duplicates dropped by
//! `message_id`, the ids written after the output and before the acks).

mod committer;
mod marker;
pub mod message_ids;
pub mod names;
mod object_recovery;
mod recovery;

pub use committer::{Committed, Committer, Staged};
pub use marker::{CommitError, MarkerStore, ObjectVersion, PartitionMarkers, RangeManifest};
pub use object_recovery::{ObjectInput, recover_objects};
pub use recovery::{RecoveryError, RecoveryReport, recover_partitions};

#[cfg(test)]
mod tests;
