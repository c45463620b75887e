//! The source contract every connector implements.
//!
//! Lifecycle, as the platform drives it:
//!
//! ```text
//! let mut source = KafkaSource::connect(config).await?; // (or any connector's) connect, subscribe
//! loop {
//!     let events = source.next_events().await?;       // cancel-safe; None = source finished
//!     ... batch, run the function, write Parquet ...
//!     // once every output row derived from `delta` is in a completed object:
//!     source.ack(&delta).await?;                       // commit offsets / ack deliveries
//! }
//! source.close().await;                               // leave the group; nothing is acked
//! ```
//!
//! | outcome of the positions in a delta            | what the platform does          |
//! |------------------------------------------------|---------------------------------|
//! | every derived row is in a completed object     | `ack(delta)`                    |
//! | the batch failed and will be retried           | nothing: the events are kept    |
//! | the job stops before the output is durable     | nothing: redelivered on restart |
//!
//! A source never acknowledges by itself, and an acknowledged position is never
//! redelivered to the same job (the broker may still redeliver unacknowledged ones). What
//! the platform makes of redeliveries is per kind of split: Kafka partitions and object
//! versions go through its exactly-once commit protocol, AMQP queues are at-least-once
//! with duplicates dropped by `message_id`.

use async_trait::async_trait;

use crate::checkpoint::CheckpointDelta;
use crate::event::Event;
use crate::retry::{Classify, Retry};

/// Why a source failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The broker is unreachable or refused a request; retrying later may help.
    #[error("{connector} source: broker unavailable: {message}")]
    Unavailable {
        connector: &'static str,
        message: String,
    },
    /// The job's trigger configuration is wrong (user error); retrying cannot help.
    #[error("{connector} source: bad configuration: {message}")]
    Config {
        connector: &'static str,
        message: String,
    },
    /// Committing positions failed; the positions stay unacknowledged.
    #[error("{connector} source: could not acknowledge {positions}: {message}")]
    Ack {
        connector: &'static str,
        positions: String,
        message: String,
    },
    /// A bug or an invariant broken inside Sluice.
    #[error("{connector} source: internal error: {message}")]
    Internal {
        connector: &'static str,
        message: String,
    },
}

/// An unreachable broker and a failed acknowledgement may pass; a wrong configuration and
/// an internal error do not.
impl Classify for SourceError {
    fn retry(&self) -> Retry {
        match self {
            SourceError::Unavailable { .. } | SourceError::Ack { .. } => Retry::Transient,
            SourceError::Config { .. } | SourceError::Internal { .. } => Retry::Permanent,
        }
    }
}

/// A stream of events with explicit acknowledgement. See the module docs for the lifecycle.
#[async_trait]
pub trait Source: Send {
    /// Waits for the next events and returns at least one, or `None` once a finite source
    /// is exhausted (a broker source never is). Must be cancel-safe: if the future is
    /// dropped before it completes, no event is lost.
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError>;

    /// Acknowledges every position in `delta`. Called only once every output row derived
    /// from those positions is durable, in the order the positions were delivered.
    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError>;

    /// Messages waiting behind the ones already delivered, when the source knows.
    fn backlog(&self) -> Option<u64> {
        None
    }

    /// True when acknowledging `pending` (positions whose output is processed but not yet
    /// durable) now would keep this source delivering: a source whose broker stops
    /// sending once a window of unacknowledged deliveries is full says so before it
    /// stalls, and the platform then commits without waiting for the file age or size.
    /// Default: never (Kafka and object sources deliver regardless of acknowledgements).
    fn ack_pressure(&self, pending: &CheckpointDelta) -> bool {
        let _ = pending;
        false
    }

    /// Stops consuming. Positions not yet acknowledged are redelivered on the next start.
    async fn close(&mut self) {}
}
