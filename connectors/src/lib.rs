//! Sluice source connectors.
//!
//! A connector turns broker messages into [`Event`]s, reports its backlog and takes
//! acknowledgements. It never acknowledges by itself: the platform calls
//! [`Source::ack`] with a [`CheckpointDelta`] only once every output row derived from the
//! positions in it is durable.
//!
//! Each connector is one folder (`kafka/`, `amqp/`, `bucket/`) holding its source, its
//! `job.toml` tables (`table.rs`: the serde structs and the checks, with the shared kit
//! [`config_check`]), its configuration type — checked without I/O, produced directly
//! by those checks — and everything else that differs by kind: the configuration
//! implements [`Trigger`] (connect, the splits recovery can read again, the backlog of a
//! paused job, de-duplication, how samples are read), and a connector that can keep dead
//! letters implements [`dead_letter::LetterBroker`] for its `[dead_letter.<kind>]` table.
//! [`registry`] lists the kinds, once. The platform asks these traits and never branches
//! on the kind. Every error here says whether a retry can help ([`Classify`]).
//!
//! # Adding a connector
//!
//! 1. A folder `src/<kind>/` with `pub mod <kind>;` here, holding:
//!    - the source ([`Source`]; run the conformance suite, `testing::conformance`,
//!      against it);
//!    - its configuration type implementing [`Trigger`] (only `kind`, `as_any` and
//!      `connect` are required; a source whose positions can be read again also gives a
//!      [`RangeLog`]);
//!    - its `[trigger.<kind>]` table: a `#[serde(deny_unknown_fields)]` struct with user
//!      docs, implementing [`registry::TriggerTable`] by checking itself into the
//!      configuration with [`config_check::Checker`];
//!    - for a dead-letter destination on the same broker, a configuration implementing
//!      [`dead_letter::LetterBroker`] and its `[dead_letter.<kind>]` table implementing
//!      [`registry::DeadLetterTable`].
//! 2. One line in [`registry::supported_triggers`] (and one in
//!    [`registry::supported_dead_letter_brokers`] for dead letters).
//!
//! Nothing in the platform changes: it reads, checks, opens, recovers, reports and
//! samples every trigger through these traits. Only positions of a new kind of split add
//! their variant to [`SplitId`] and [`Origin`] (whose texts name output and markers, so
//! they never change once released).

pub mod amqp;
pub mod bucket;
pub mod checkpoint;
pub mod config_check;
pub mod dead_letter;
pub mod event;
#[cfg(any(test, feature = "testing"))]
pub mod faulty_store;
pub mod kafka;
pub mod range_log;
pub mod registry;
pub mod retry;
pub mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod trigger;
pub mod vec_source;

pub use checkpoint::{CheckpointDelta, CheckpointError, PositionRange, SplitId};
pub use event::{Event, Header, Origin};
pub use range_log::RangeLog;
pub use retry::{Classify, Retry};
pub use source::{Source, SourceError};
pub use trigger::Trigger;
pub use vec_source::VecSource;
