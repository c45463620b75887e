//! Sluice source connectors.
//!
//! A connector turns broker messages into [`Event`]s, reports its backlog and takes
//! acknowledgements. It never acknowledges by itself: the platform calls
//! [`Source::ack`] with a [`CheckpointDelta`] only once every output row derived from the
//! positions in it is durable.
//!
//! Connectors are listed explicitly in [`supported_connectors`]; there is no registration
//! macro.

pub mod amqp;
pub mod bucket;
pub mod checkpoint;
pub mod event;
#[cfg(any(test, feature = "testing"))]
pub mod faulty_store;
pub mod kafka;
pub mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vec_source;

pub use checkpoint::{CheckpointDelta, CheckpointError, PositionRange, SplitId};
pub use event::{Event, Header, Origin};
pub use source::{Source, SourceError};
pub use vec_source::VecSource;

/// Every connector this build supports, by the table name used in `job.toml`
/// (`[trigger.<name>]`).
pub fn supported_connectors() -> &'static [&'static str] {
    &["kafka", "amqp", "bucket"]
}
