//! Exactly-once Parquet output for splits whose positions can be read again (Kafka
//! partitions, object versions): the commit protocol and recovery.
//!
//! Per split and commit, a range of positions `first..=last` (offsets, or lines) is
//! written as: (a) an intent marker listing the objects it will write (create-only), (b)
//! the objects, named from the range, (c) a commit marker (create-only), (d) the
//! positions acknowledged (`last + 1`), (e) older markers deleted. On start, [`recover`]
//! writes every range with an intent and no commit marker again with the same boundaries
//! (so the same names), reading it through the trigger's `RangeLog`; deletes what the
//! interrupted attempt wrote and the redo did not; commits it; and lets the connector
//! move its positions up to the committed ranges. While a job runs, records a commit
//! marker covers are skipped. `design.md` beside this file has the state machine and a
//! crash analysis of every step.
//!
//! The module never looks at the job's trigger or at the kind of a split: what differs
//! per kind (reading a range again, healing positions, the names of a split's folder) is
//! the connector's (`sluice_connectors::RangeLog`, `SplitId::range_folder`), and
//! `crate::trigger` picks the range log a job needs.
//!
//! Files: `names.rs` (every name from a range), `marker.rs` (markers in the store),
//! `committer.rs` (the steps as the pipeline drives them, `Staged` → `Committed`),
//! `recovery.rs` (recovery on start), `message_ids.rs` (AMQP queues, which have no
//! ranges: duplicates dropped by `message_id`, the ids written after the output and
//! before the acks).

mod committer;
mod marker;
pub mod message_ids;
pub mod names;
mod recovery;

pub use committer::{Committed, Committer, Staged};
pub use marker::{CommitError, MarkerStore, ObjectVersion, PartitionMarkers, RangeManifest};
pub use recovery::{RecoveryError, RecoveryReport, recover};

#[cfg(test)]
mod tests;
