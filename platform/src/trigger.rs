//! Opens a job's trigger. Validation already produced the connector's configuration
//! (`spec::TriggerSpec`), and everything that differs by kind is the connector's
//! ([`sluice_connectors::Trigger`]); this file only opens the stores a trigger names,
//! with the platform's store rules, and hands them over.

use sluice_connectors::trigger::{ConnectContext, StoreLocation};
use sluice_connectors::{RangeLog, Source, SourceError};

use crate::output::store::{StoreError, open_store};
use crate::spec::JobSpec;

/// How the source should behave beyond what the job declares.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// A finite source (a bucket listing) ends once it finds nothing new (one-shot runs);
    /// sources that never end ignore it.
    pub stop_when_idle: bool,
}

/// The queue whose messages are de-duplicated by `message_id`, when the trigger has one.
pub fn deduplicated_queue(spec: &JobSpec) -> Option<&str> {
    spec.trigger.deduplicated_queue()
}

/// The splits of a job's trigger that can be read again, for the commit protocol and
/// its recovery (a Kafka topic's partitions, a bucket's object versions); `None` when
/// they cannot (an AMQP queue: at-least-once, duplicates dropped by `message_id`). Opens
/// nothing remote.
pub fn range_log(spec: &JobSpec) -> Result<Option<Box<dyn RangeLog>>, StoreError> {
    let input = input_location(spec)?;
    Ok(spec.trigger.range_log(input.as_ref()))
}

/// Connects the job's source. Nothing is consumed until the pipeline asks for events.
/// Run recovery over the job's [`range_log`] first (as [`crate::pipeline::Job::open`]
/// does): a Kafka source joins the group and resumes from its committed offsets, which
/// recovery completes.
pub async fn connect_source(
    spec: &JobSpec,
    options: ConnectOptions,
) -> Result<Box<dyn Source>, SourceError> {
    let config_error = |message: String| SourceError::Config {
        connector: spec.trigger.kind(),
        message,
    };
    let input = input_location(spec).map_err(|e| {
        let url = spec.trigger.input_store().map_or("", |input| input.url);
        config_error(format!("input {url}: {e}"))
    })?;
    let output = open_store(&spec.output.url, &spec.output.options)
        .map_err(|e| config_error(format!("output {}: {e}", spec.output.url)))?;
    let context = ConnectContext {
        job: spec.name.clone(),
        input,
        output,
        stop_when_idle: options.stop_when_idle,
    };
    spec.trigger.connect(context).await
}

/// The backlog of a job that is not consuming (paused), when its broker can tell: the
/// lag of a Kafka group, the depth of an AMQP queue.
pub async fn backlog_at_rest(spec: &JobSpec) -> Option<Result<u64, SourceError>> {
    spec.trigger.backlog_at_rest().await
}

/// The store the trigger reads, opened; `None` when it names none.
fn input_location(spec: &JobSpec) -> Result<Option<StoreLocation>, StoreError> {
    spec.trigger
        .input_store()
        .map(|input| open_store(input.url, input.options))
        .transpose()
}
