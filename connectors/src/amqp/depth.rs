//! The depth of a job's queue, read with a passive declare on a connection of its own:
//! the backlog of a job that is not consuming (paused), which its source cannot report.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

use super::config::{AmqpSourceConfig, parse_broker_url};
use crate::source::SourceError;

/// Timeout of the whole lookup.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Ready messages in the job's queue.
pub async fn queue_depth(config: &AmqpSourceConfig) -> Result<u64, SourceError> {
    let uri = parse_broker_url(&config.url)?;
    let queue =
        ShortString::try_new(config.queue.as_str()).map_err(|error| SourceError::Config {
            connector: "amqp",
            message: format!("`{}`: {error}", config.queue),
        })?;
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{}-depth", config.connection_name()).into());
    let lookup = async {
        let connection = Connection::connect_uri(uri, properties).await?;
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = connection.close(200, "done".into()).await;
        declared
    };
    match tokio::time::timeout(TIMEOUT, lookup).await {
        Ok(Ok(queue)) => Ok(u64::from(queue.message_count())),
        Ok(Err(error)) => Err(SourceError::Unavailable {
            connector: "amqp",
            message: format!("reading the depth of queue {}: {error}", config.queue),
        }),
        Err(_) => Err(SourceError::Unavailable {
            connector: "amqp",
            message: format!(
                "reading the depth of queue {} took over {TIMEOUT:?}",
                config.queue
            ),
        }),
    }
}
