//! What the platform asks of a job's trigger, whatever its kind: the one trait each
//! connector's configuration implements, so no code outside this crate branches on the
//! kind of trigger.
//!
//! | the platform…                          | asks                                  | default |
//! |----------------------------------------|---------------------------------------|---------|
//! | opens the store a trigger reads        | [`Trigger::input_store`]              | none    |
//! | recovers unfinished output             | [`Trigger::range_log`]                | none: the splits cannot be read again |
//! | starts the job                         | [`Trigger::connect`]                  | —       |
//! | shows a paused job's backlog           | [`Trigger::backlog_at_rest`]          | unknown |
//! | drops redelivered duplicates           | [`Trigger::deduplicated_queue`]       | none    |
//! | reads `sluice invoke` samples          | [`Trigger::sample_format`]            | one payload per line |

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::bucket::{InputCompression, InputFormat};
use crate::range_log::RangeLog;
use crate::source::{Source, SourceError};

/// An object store and the prefix inside it, as the platform opened it from a URL.
#[derive(Debug, Clone)]
pub struct StoreLocation {
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of every object here; may be empty.
    pub prefix: Path,
    /// The URL it was opened from, for messages.
    pub url: String,
}

impl StoreLocation {
    /// The object at `relative` (`/`-separated, already escaped) below the prefix, taken
    /// verbatim. Errors for empty, `.` or `..` segments and control characters.
    pub fn object_path(&self, relative: &str) -> Result<Path, object_store::path::Error> {
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            Path::parse(relative)
        } else {
            Path::parse(format!("{prefix}/{relative}"))
        }
    }
}

/// A store a trigger reads from: its URL and the store options that go with it.
#[derive(Debug, Clone, Copy)]
pub struct InputStore<'a> {
    pub url: &'a str,
    pub options: &'a BTreeMap<String, String>,
}

/// What a trigger is connected with, besides its own configuration.
#[derive(Debug, Clone)]
pub struct ConnectContext {
    /// The job's name, for client names and logs.
    pub job: String,
    /// The store of [`Trigger::input_store`], opened; `None` when the trigger names none.
    pub input: Option<StoreLocation>,
    /// The job's output location: a trigger keeps its own durable state below it
    /// (`_sluice/<kind>/…`).
    pub output: StoreLocation,
    /// A finite source ends once it finds nothing new (one-shot runs); sources that
    /// never end ignore it.
    pub stop_when_idle: bool,
}

/// One kind of trigger's behaviour, implemented by its validated configuration. See the
/// module docs.
#[async_trait]
pub trait Trigger: Send + Sync + std::fmt::Debug {
    /// The kind, as in `[trigger.<kind>]`.
    fn kind(&self) -> &'static str;

    /// The configuration itself, for code that needs the concrete type (validation of
    /// tables that refer to the trigger, tests).
    fn as_any(&self) -> &dyn std::any::Any;

    /// The object store the trigger reads, which the platform opens with its own store
    /// rules and passes to [`Trigger::range_log`] and [`Trigger::connect`].
    fn input_store(&self) -> Option<InputStore<'_>> {
        None
    }

    /// The splits of this trigger that can be read again, for the platform's commit
    /// protocol and its recovery; `None` when they cannot (at-least-once). Opens nothing
    /// remote.
    fn range_log(&self, input: Option<&StoreLocation>) -> Option<Box<dyn RangeLog>> {
        let _ = input;
        None
    }

    /// Connects the source. Nothing is consumed until the platform asks for events; run
    /// recovery over [`Trigger::range_log`] first.
    async fn connect(&self, context: ConnectContext) -> Result<Box<dyn Source>, SourceError>;

    /// The backlog of a job that is not consuming (paused), when the broker can tell
    /// without a consumer.
    async fn backlog_at_rest(&self) -> Option<Result<u64, SourceError>> {
        None
    }

    /// The queue whose messages the platform de-duplicates by their producer-set
    /// `message_id` (at-least-once delivery made exactly-once where producers set it).
    fn deduplicated_queue(&self) -> Option<&str> {
        None
    }

    /// How `sluice invoke` reads sample files for this trigger: as the trigger reads its
    /// input (a bucket), or one message payload per line (brokers).
    fn sample_format(&self) -> (InputFormat, InputCompression) {
        (InputFormat::Lines, InputCompression::Auto)
    }
}
