//! Reading lines `first..=last` of one object version again, for the platform's recovery
//! of an unfinished object range (see `platform/src/commit/design.md`): [`ObjectRangeLog`]
//! is the bucket trigger's [`RangeLog`].
//!
//! The events are the ones the bucket source produced the first time (same origins, same
//! line numbers), so the redo's output has the same names. The object must still be the
//! same version: when its etag changed or it is gone, there is nothing to read and the
//! range is committed with what could be written (nothing), like Kafka records deleted
//! by retention before a redo.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use tracing::warn;

use super::reader::{InputCompression, InputFormat, resolve};
use super::source::{ObjectVersion, ReadItem, object_location, spawn_read};
use crate::checkpoint::{PositionRange, SplitId};
use crate::range_log::{OBJECT_RANGES, RangeLog};
use crate::source::{Source, SourceError};
use crate::vec_source::VecSource;

/// A bucket trigger's input objects as a [`RangeLog`]: its splits are object versions.
/// Nothing to heal: the bucket source's cursor marks an object done only after its last
/// line is acknowledged, and lines a commit marker covers are skipped (and acknowledged)
/// when the object is read again.
#[derive(Debug, Clone)]
pub struct ObjectRangeLog {
    /// The input URL's store.
    pub store: Arc<dyn ObjectStore>,
    /// The input URL's prefix inside the store (empty for none).
    pub prefix: Path,
    /// True when splits name keys relative to `prefix` (listing), false when they name
    /// the bucket's own keys (notifications).
    pub keys_below_prefix: bool,
    pub format: InputFormat,
    pub compression: InputCompression,
}

#[async_trait]
impl RangeLog for ObjectRangeLog {
    fn range_folder(&self) -> String {
        OBJECT_RANGES.to_owned()
    }

    async fn read_range(
        &self,
        split: &SplitId,
        range: PositionRange,
    ) -> Result<Box<dyn Source>, SourceError> {
        let SplitId::Object { bucket, key, etag } = split else {
            return Err(SourceError::Internal {
                connector: "bucket",
                message: format!("split {split} is not an object version"),
            });
        };
        let prefix = self.prefix.as_ref();
        let location = if self.keys_below_prefix && !prefix.is_empty() {
            object_location(&format!("{prefix}/{key}"))
        } else {
            object_location(key)
        };
        let request = ObjectRangeRequest {
            store: self.store.clone(),
            location,
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: etag.to_string(),
            format: self.format,
            compression: self.compression,
        };
        Ok(Box::new(read_object_range(request, range).await?))
    }
}

/// One object version and where it is read from.
#[derive(Debug, Clone)]
pub struct ObjectRangeRequest {
    pub store: Arc<dyn ObjectStore>,
    pub location: Path,
    /// The input URL, as in the events' origins.
    pub bucket: String,
    pub key: String,
    /// `""` when the store gave none.
    pub etag: String,
    pub format: InputFormat,
    pub compression: InputCompression,
}

/// The events of lines `range` of the object version, as a finite source.
pub async fn read_object_range(
    request: ObjectRangeRequest,
    range: PositionRange,
) -> Result<VecSource, SourceError> {
    let unavailable = |message: String| SourceError::Unavailable {
        connector: "bucket",
        message,
    };
    let current = match request.store.head(&request.location).await {
        Ok(meta) => meta.e_tag.unwrap_or_default(),
        Err(object_store::Error::NotFound { .. }) => {
            warn!(object = %request.location, "the object of an unfinished range is gone; its range is committed empty");
            return Ok(VecSource::new(Vec::new(), 1));
        }
        Err(error) => return Err(unavailable(format!("{}: {error}", request.location))),
    };
    if current.trim_matches('"') != request.etag.trim_matches('"') {
        warn!(object = %request.location, etag = %request.etag, current = %current, "the object of an unfinished range was replaced; its range is committed empty");
        return Ok(VecSource::new(Vec::new(), 1));
    }
    // The same reader as the bucket source's, so the same origins and line numbers.
    let mut items = spawn_read(
        request.store.clone(),
        request.location.clone(),
        resolve(&request.key, request.format, request.compression),
        ObjectVersion {
            bucket: Arc::from(request.bucket.as_str()),
            key: Arc::from(request.key.as_str()),
            etag: (!request.etag.is_empty()).then(|| Arc::from(request.etag.as_str())),
        },
    );
    let mut events = Vec::new();
    let failure = loop {
        match items.recv().await {
            Some(ReadItem::Events(chunk)) => {
                events.extend(chunk.into_iter().filter(|event| {
                    let line = event.origin.position();
                    line >= range.first && line <= range.last
                }));
            }
            Some(ReadItem::Done { .. }) => break None,
            Some(ReadItem::Failed(error)) => break Some(error),
            None => {
                return Err(SourceError::Internal {
                    connector: "bucket",
                    message: format!(
                        "the reader of {} stopped before the end of the object",
                        request.location
                    ),
                });
            }
        }
    };
    match failure {
        None => Ok(VecSource::new(events, 1000)),
        // The first read got this far too: the lines before the error are the range.
        Some(error)
            if events
                .last()
                .is_some_and(|e| e.origin.position() >= range.last) =>
        {
            warn!(object = %request.location, error = %error.message, "the object cannot be read to its end; its unfinished range was read");
            Ok(VecSource::new(events, 1000))
        }
        Some(error) => Err(unavailable(format!(
            "{} line {:?}: {}",
            request.location, error.line, error.message
        ))),
    }
}
