//! `[trigger.amqp]` as the platform sees it ([`Trigger`]): a queue cannot be read again,
//! so delivery is at-least-once with duplicates dropped by `message_id`; the backlog at
//! rest is the queue's depth.

use async_trait::async_trait;

use super::{AmqpSource, AmqpSourceConfig};
use crate::source::{Source, SourceError};
use crate::trigger::{ConnectContext, Trigger};

#[async_trait]
impl Trigger for AmqpSourceConfig {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn connect(&self, _context: ConnectContext) -> Result<Box<dyn Source>, SourceError> {
        Ok(Box::new(AmqpSource::connect(self.clone()).await?))
    }

    async fn backlog_at_rest(&self) -> Option<Result<u64, SourceError>> {
        Some(super::depth::queue_depth(self).await)
    }

    fn deduplicated_queue(&self) -> Option<&str> {
        Some(&self.queue)
    }
}
