//! `[trigger.kafka]` as the platform sees it ([`Trigger`]): offsets can be read again, so
//! partitions take part in the commit protocol; the backlog at rest is the group's lag.

use async_trait::async_trait;

use super::{KafkaPartitionLog, KafkaSource, KafkaSourceConfig};
use crate::range_log::RangeLog;
use crate::source::{Source, SourceError};
use crate::trigger::{ConnectContext, StoreLocation, Trigger};

#[async_trait]
impl Trigger for KafkaSourceConfig {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn range_log(&self, _input: Option<&StoreLocation>) -> Option<Box<dyn RangeLog>> {
        Some(Box::new(KafkaPartitionLog::new(self.clone())))
    }

    /// Joins the group and resumes from its committed offsets (which recovery completes).
    async fn connect(&self, _context: ConnectContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(KafkaSource::connect(self.clone()).await?))
    }

    async fn backlog_at_rest(&self) -> Option<Result<u64, SourceError>> {
        Some(super::lag::group_lag(self).await)
    }
}
