//! Sluice source connectors.
//!
//! A connector turns broker messages into [`Event`]s, reports its backlog and takes
//! acknowledgements. It never acknowledges by itself: the platform calls
//! [`Source::ack`] with a [`CheckpointDelta`] only once every output row derived from the
//! positions in it is durable.
//!
//! Each connector is one folder with its configuration type, checked without I/O; the
//! platform's job validation produces that type directly, and lists the connectors in
//! one table (`TRIGGERS` in `sluice_platform::spec::validate`); there is no registration
//! macro. Every error here says whether a retry can help ([`Classify`]).

pub mod amqp;
pub mod bucket;
pub mod checkpoint;
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
pub mod vec_source;

pub use checkpoint::{CheckpointDelta, CheckpointError, PositionRange, SplitId};
pub use event::{Event, Header, Origin};
pub use range_log::RangeLog;
pub use retry::{Classify, Retry};
pub use source::{Source, SourceError};
pub use vec_source::VecSource;
