//! `[trigger.bucket]`, validated: the bucket connector's configuration, produced by the
//! platform's job validation, and what the platform asks of it ([`Trigger`]).
//!
//! Object versions can be read again by line, so they take part in the commit protocol
//! ([`ObjectRangeLog`]). The source keeps its cursor and its notification spool below
//! the job's output ([`CURSOR`], [`NOTICES`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::feed::NotificationFeed;
use super::notification::{NoticeFilter, bucket_of_url};
use super::range::ObjectRangeLog;
use super::spool::NoticeSpool;
use super::{BucketSource, BucketSourceConfig, Discovery, InputCompression, InputFormat};
use crate::range_log::RangeLog;
use crate::source::{Source, SourceError};
use crate::text::redact_userinfo;
use crate::trigger::{ConnectContext, InputStore, StoreLocation, Trigger};

/// Where a bucket trigger keeps its cursor, relative to the job's output.
pub const CURSOR: &str = "_sluice/bucket/cursor.json";
/// Where a bucket trigger in notification mode keeps accepted notifications.
pub const NOTICES: &str = "_sluice/bucket/notices";

/// `[trigger.bucket]`. `Debug` masks the URL's userinfo and shows option names only.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketTriggerConfig {
    /// `file://`, `s3://` or `memory://` URL of the input prefix.
    pub url: String,
    pub discovery: BucketDiscovery,
    pub format: InputFormat,
    pub compression: InputCompression,
    pub poll_interval: Duration,
    /// Notifications: how long a notified object may be missing before its notification
    /// is given up (dead-lettered, out of the spool).
    pub missing_timeout: Duration,
    /// Store options for the input, `${ENV}` expanded.
    pub options: BTreeMap<String, String>,
}

/// How a bucket trigger finds objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketDiscovery {
    Listing,
    Notifications {
        /// Where notifications arrive.
        feed: Box<NotificationFeed>,
        events: Vec<String>,
        prefix: String,
        suffix: String,
    },
}

impl std::fmt::Debug for BucketTriggerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketTriggerConfig")
            .field("url", &redact_userinfo(&self.url))
            .field("discovery", &self.discovery)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("poll_interval", &self.poll_interval)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl BucketTriggerConfig {
    /// The input objects, for recovery to read lines again.
    pub fn object_range_log(&self, input: &StoreLocation) -> ObjectRangeLog {
        ObjectRangeLog {
            store: input.store.clone(),
            prefix: input.prefix.clone(),
            keys_below_prefix: matches!(self.discovery, BucketDiscovery::Listing),
            format: self.format,
            compression: self.compression,
        }
    }

    /// The source's configuration over the opened `input` and the job's output.
    pub fn source_config(
        &self,
        input: StoreLocation,
        context: &ConnectContext,
    ) -> Result<BucketSourceConfig, SourceError> {
        let config_error = |message: String| SourceError::Config {
            connector: "bucket",
            message,
        };
        let output = &context.output;
        let cursor_path = output
            .object_path(CURSOR)
            .map_err(|e| config_error(format!("cursor path: {e}")))?;
        let discovery = match &self.discovery {
            BucketDiscovery::Listing => Discovery::Listing {
                poll_interval: self.poll_interval,
            },
            BucketDiscovery::Notifications {
                feed,
                events,
                prefix,
                suffix,
            } => Discovery::Notifications {
                feed: feed.clone(),
                filter: NoticeFilter {
                    events: events.clone(),
                    prefix: prefix.clone(),
                    suffix: suffix.clone(),
                    bucket: bucket_of_url(&self.url),
                },
                spool: NoticeSpool::new(
                    output.store.clone(),
                    output
                        .object_path(NOTICES)
                        .map_err(|e| config_error(format!("notification spool path: {e}")))?,
                ),
            },
        };
        Ok(BucketSourceConfig {
            job: context.job.clone(),
            input_store: input.store,
            input_prefix: input.prefix,
            input_url: input.url,
            cursor_store: output.store.clone(),
            cursor_path,
            format: self.format,
            compression: self.compression,
            discovery,
            stop_when_idle: context.stop_when_idle,
            missing_timeout: self.missing_timeout,
        })
    }
}

#[async_trait]
impl Trigger for BucketTriggerConfig {
    fn kind(&self) -> &'static str {
        "bucket"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn input_store(&self) -> Option<InputStore<'_>> {
        Some(InputStore {
            url: &self.url,
            options: &self.options,
        })
    }

    fn range_log(&self, input: Option<&StoreLocation>) -> Option<Box<dyn RangeLog>> {
        Some(Box::new(self.object_range_log(input?)))
    }

    async fn connect(&self, context: ConnectContext) -> Result<Box<dyn Source>, SourceError> {
        let Some(input) = context.input.clone() else {
            return Err(SourceError::Internal {
                connector: "bucket",
                message: format!(
                    "the input store {} was not opened",
                    redact_userinfo(&self.url)
                ),
            });
        };
        let config = self.source_config(input, &context)?;
        Ok(Box::new(BucketSource::connect(config).await?))
    }

    /// Only a listing against the cursor would tell: unknown.
    async fn backlog_at_rest(&self) -> Option<Result<u64, SourceError>> {
        None
    }

    fn sample_format(&self) -> (InputFormat, InputCompression) {
        (self.format, self.compression)
    }
}
