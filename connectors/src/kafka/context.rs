//! The consumer's librdkafka callbacks and the state they keep for the source.
//!
//! librdkafka calls these on whichever thread polls the consumer (the poll thread, or the
//! thread that closes the consumer), never on the async runtime. They only log and update
//! [`SourceState`], which the async side reads without blocking:
//!
//! - rebalances keep the set of assigned partitions of the topic (works for both the eager
//!   and the cooperative protocol: an assignment adds partitions, a revocation removes them);
//! - statistics give the backlog (see [`backlog_from_statistics`]);
//! - librdkafka's log lines and global errors go to `tracing`, with the job's fields.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use super::config::KafkaStart;

/// The consumer type of the Kafka source.
pub(super) type KafkaConsumer = BaseConsumer<KafkaConsumerContext>;

/// `backlog` value meaning "no statistics yet".
const BACKLOG_UNKNOWN: u64 = u64::MAX;

/// What the callbacks and the poll thread share with the async side.
#[derive(Debug)]
pub(super) struct SourceState {
    /// Partitions of the topic assigned to this consumer.
    assigned: Mutex<BTreeSet<i32>>,
    /// Total lag from the last usable statistics, or [`BACKLOG_UNKNOWN`].
    backlog: AtomicU64,
    /// Set once to tell the poll thread to finish.
    stop: AtomicBool,
}

impl SourceState {
    pub(super) fn new() -> Self {
        Self {
            assigned: Mutex::new(BTreeSet::new()),
            backlog: AtomicU64::new(BACKLOG_UNKNOWN),
            stop: AtomicBool::new(false),
        }
    }

    pub(super) fn assigned_partitions(&self) -> Vec<i32> {
        self.assigned_set().iter().copied().collect()
    }

    pub(super) fn backlog(&self) -> Option<u64> {
        match self.backlog.load(Ordering::Relaxed) {
            BACKLOG_UNKNOWN => None,
            backlog => Some(backlog),
        }
    }

    pub(super) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn assigned_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        // The set stays consistent even if a holder panicked: every update is one insert
        // or remove.
        self.assigned.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The consumer's callbacks, tagged with the job and topic they serve.
pub(super) struct KafkaConsumerContext {
    job: Arc<str>,
    topic: Arc<str>,
    start: KafkaStart,
    state: Arc<SourceState>,
}

impl KafkaConsumerContext {
    pub(super) fn new(
        job: Arc<str>,
        topic: Arc<str>,
        start: KafkaStart,
        state: Arc<SourceState>,
    ) -> Self {
        Self {
            job,
            topic,
            start,
            state,
        }
    }

    /// Partitions of this source's topic in a list from librdkafka.
    fn partitions_of_topic(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.topic)
            .iter()
            .map(|element| element.partition())
            .collect()
    }
}

impl ClientContext for KafkaConsumerContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let job = &*self.job;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", job, facility, "{message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", job, facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", job, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", job, facility, "{message}"),
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let statistics: RawStatistics = match serde_json::from_slice(statistics) {
            Ok(statistics) => statistics,
            Err(error) => {
                warn!(job = &*self.job, %error, "could not read librdkafka statistics");
                return;
            }
        };
        let assigned = self.state.assigned_set().clone();
        if let Some(backlog) =
            backlog_from_statistics(&statistics, &self.topic, &assigned, self.start)
        {
            self.state.backlog.store(backlog, Ordering::Relaxed);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let (job, topic) = (&*self.job, &*self.topic);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            error!(job, topic, %error, reason, "kafka consumer failed fatally");
        } else {
            // librdkafka retries these itself (reconnects, metadata refreshes, fetches).
            warn!(job, topic, %error, reason, "kafka consumer error, retrying");
        }
    }
}

impl ConsumerContext for KafkaConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = self.partitions_of_topic(list);
            let lost = consumer.assignment_lost();
            let mut assigned = self.state.assigned_set();
            for partition in &partitions {
                assigned.remove(partition);
            }
            let (job, topic) = (&*self.job, &*self.topic);
            // Positions of these partitions that were delivered but not acknowledged go to
            // the partitions' next owner: at-least-once.
            info!(job, topic, ?partitions, lost, remaining = ?*assigned, "kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (job, topic) = (&*self.job, &*self.topic);
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.partitions_of_topic(list);
                let mut assigned = self.state.assigned_set();
                assigned.extend(partitions.iter().copied());
                info!(job, topic, ?partitions, assigned = ?*assigned, "kafka partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                warn!(job, topic, %error, "kafka rebalance failed, the group will retry");
            }
        }
    }
}

/// The parts of librdkafka's statistics JSON the backlog needs.
#[derive(Debug, Default, Deserialize)]
struct RawStatistics {
    #[serde(default)]
    topics: HashMap<String, RawTopic>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTopic {
    #[serde(default)]
    partitions: HashMap<String, RawPartition>,
}

/// Offsets librdkafka knows for one partition; -1 or -1001 mean "unknown".
#[derive(Debug, Clone, Copy, Deserialize)]
struct RawPartition {
    partition: i32,
    /// High watermark, from fetch responses.
    #[serde(default = "unknown_offset")]
    hi_offset: i64,
    /// Log start offset, from fetch responses.
    #[serde(default = "unknown_offset")]
    lo_offset: i64,
    /// The group's committed offset.
    #[serde(default = "unknown_offset")]
    committed_offset: i64,
    /// `hi_offset - committed_offset`, or -1 without a committed offset.
    #[serde(default = "unknown_offset")]
    consumer_lag: i64,
    /// Offset of the last message handed to the poll thread, plus one.
    #[serde(default = "unknown_offset")]
    app_offset: i64,
}

fn unknown_offset() -> i64 {
    -1
}

/// Messages of the assigned partitions that the group has not committed yet.
///
/// Per partition, the broker's high watermark (`hi_offset`, carried by fetch responses —
/// some brokers answer ListOffsets with a wrong one) minus the committed offset, which is
/// librdkafka's `consumer_lag`. Without a committed offset the group has not acknowledged
/// anything there yet: from the log start for [`KafkaStart::Earliest`], from the last
/// message handed over for [`KafkaStart::Latest`] (the start position is not in the
/// statistics). Partitions whose high watermark is not known yet (nothing fetched) count
/// as zero; `None` when none of the assigned partitions has one, so an early statistics
/// report does not read as an empty backlog.
fn backlog_from_statistics(
    statistics: &RawStatistics,
    topic: &str,
    assigned: &BTreeSet<i32>,
    start: KafkaStart,
) -> Option<u64> {
    if assigned.is_empty() {
        return Some(0);
    }
    let partitions = statistics.topics.get(topic)?;
    let mut total: u64 = 0;
    let mut known = false;
    for partition in partitions.partitions.values() {
        if !assigned.contains(&partition.partition) || partition.hi_offset < 0 {
            continue;
        }
        known = true;
        let lag = if partition.consumer_lag >= 0 {
            partition.consumer_lag
        } else if partition.committed_offset >= 0 {
            partition.hi_offset - partition.committed_offset
        } else {
            match start {
                KafkaStart::Earliest => partition.hi_offset - partition.lo_offset.max(0),
                KafkaStart::Latest if partition.app_offset >= 0 => {
                    partition.hi_offset - partition.app_offset
                }
                KafkaStart::Latest => 0,
            }
        };
        total = total.saturating_add(u64::try_from(lag).unwrap_or(0));
    }
    known.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statistics(partitions: &str) -> RawStatistics {
        serde_json::from_str(&format!(
            r#"{{"name": "c", "topics": {{"t": {{"topic": "t", "partitions": {{{partitions}}}}}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn sums_consumer_lag_over_assigned_partitions() {
        let stats = statistics(
            r#""0": {"partition": 0, "hi_offset": 10, "lo_offset": 0, "committed_offset": 4, "consumer_lag": 6, "app_offset": 10},
               "1": {"partition": 1, "hi_offset": 7, "lo_offset": 0, "committed_offset": 7, "consumer_lag": 0, "app_offset": 7},
               "2": {"partition": 2, "hi_offset": 99, "lo_offset": 0, "committed_offset": 0, "consumer_lag": 99, "app_offset": 0},
               "-1": {"partition": -1, "hi_offset": -1001, "consumer_lag": -1}"#,
        );
        let assigned = BTreeSet::from([0, 1]);
        assert_eq!(
            backlog_from_statistics(&stats, "t", &assigned, KafkaStart::Earliest),
            Some(6)
        );
        assert_eq!(
            backlog_from_statistics(&stats, "other", &assigned, KafkaStart::Earliest),
            None
        );
    }

    #[test]
    fn without_committed_offsets_counts_from_the_start() {
        let stats = statistics(
            r#""0": {"partition": 0, "hi_offset": 10, "lo_offset": 2, "committed_offset": -1001, "consumer_lag": -1, "app_offset": 6}"#,
        );
        let assigned = BTreeSet::from([0]);
        assert_eq!(
            backlog_from_statistics(&stats, "t", &assigned, KafkaStart::Earliest),
            Some(8)
        );
        assert_eq!(
            backlog_from_statistics(&stats, "t", &assigned, KafkaStart::Latest),
            Some(4)
        );
    }

    #[test]
    fn unknown_until_a_high_watermark_is_known() {
        let stats = statistics(
            r#""0": {"partition": 0, "hi_offset": -1001, "committed_offset": -1001, "consumer_lag": -1}"#,
        );
        let assigned = BTreeSet::from([0]);
        assert_eq!(
            backlog_from_statistics(&stats, "t", &assigned, KafkaStart::Earliest),
            None
        );
        assert_eq!(
            backlog_from_statistics(&stats, "t", &BTreeSet::new(), KafkaStart::Earliest),
            Some(0)
        );
    }
}
