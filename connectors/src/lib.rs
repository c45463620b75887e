//! Sluice source connectors.
//!
//! A connector turns broker messages into [`Event`]s, reports its backlog and takes
//! acknowledgements. It never acknowledges by itself: the platform calls
//! [`Source::ack`] with a [`CheckpointDelta`] only once every output row derived from the
//! positions in it is durable.
//!
//! Each connector is one folder (`kafka/`, `amqp/`, `bucket/`) holding its source, its
//! configuration type — checked without I/O, produced directly by the platform's job
//! validation — and everything else that differs by kind: the configuration implements
//! [`Trigger`] (connect, the splits recovery can read again, the backlog of a paused job,
//! de-duplication, how samples are read), and a connector that can keep dead letters
//! implements [`dead_letter::LetterBroker`] for its `[dead_letter.<kind>]` table. The
//! platform asks these traits and never branches on the kind. Every error here says
//! whether a retry can help ([`Classify`]).
//!
//! # Adding a connector
//!
//! 1. A folder `src/<kind>/` with the source ([`Source`]; run the conformance suite,
//!    `testing::conformance`, against it), its configuration type implementing
//!    [`Trigger`] (only `kind`, `as_any` and `connect` are required; a source whose
//!    positions can be read again also gives a [`RangeLog`]), and `pub mod <kind>;` here.
//!    Positions of a new kind of split add their variant to [`SplitId`] and [`Origin`]
//!    (whose texts name output and markers, so they never change once released).
//! 2. In the platform's job validation (`platform/src/spec`): the raw table
//!    (`[trigger.<kind>]` in `raw.rs`) and the checks that turn it into the
//!    configuration (`validate_<kind>.rs`), then one line in `TRIGGERS`
//!    (`validate.rs`), the one list of trigger kinds. Nothing else in the platform
//!    changes: it opens, recovers, reports and samples every trigger through [`Trigger`].
//! 3. For a dead-letter destination on the same broker: a configuration implementing
//!    [`dead_letter::LetterBroker`] and a `DeadLetterSpec` variant with its table.

pub mod amqp;
pub mod bucket;
pub mod checkpoint;
pub mod dead_letter;
pub mod event;
#[cfg(any(test, feature = "testing"))]
pub mod faulty_store;
pub mod kafka;
pub mod range_log;
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
