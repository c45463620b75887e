//! The Kafka source against librdkafka's in-process mock cluster (no external broker).
//!
//! The mock broker holds a group's first join for 3 s (its `group.initial.rebalance.delay`),
//! so every wait below is bounded generously and checks a condition, never a duration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

use super::{KafkaSource, KafkaSourceConfig, KafkaStart};
use crate::checkpoint::{CheckpointDelta, SplitId};
use crate::event::{Event, Header, Origin};
use crate::source::{Source, SourceError};
use crate::testing::{DEADLINE, assert_nothing_more, collect, wait_until};

const PARTITIONS: i32 = 3;
/// Base timestamp of produced messages (ms since the epoch).
const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// One mock cluster with one topic of [`PARTITIONS`] partitions.
struct Cluster {
    /// Kept alive for the test; every test closes its sources before it is dropped.
    mock: MockCluster<'static, DefaultProducerContext>,
    brokers: String,
    topic: String,
}

impl Cluster {
    fn new(topic: &str) -> Cluster {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(topic, PARTITIONS, 1).unwrap();
        Cluster {
            brokers: mock.bootstrap_servers(),
            mock,
            topic: topic.to_owned(),
        }
    }

    fn config(&self, group: &str, start: KafkaStart) -> KafkaSourceConfig {
        KafkaSourceConfig {
            job: format!("job-{group}"),
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            group: group.to_owned(),
            start,
            options: BTreeMap::from([("statistics.interval.ms".into(), "200".into())]),
        }
    }

    /// Produces `count` messages to each partition, numbered from `first` within the
    /// partition (message `n` of partition `p` has key `k-p-n`, a JSON payload, two
    /// headers and timestamp `BASE_TIMESTAMP_MS + n`), and waits until the broker has them.
    async fn produce(&self, first: usize, count: usize) {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        // The producer's flush blocks.
        tokio::task::spawn_blocking(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            for partition in 0..PARTITIONS {
                for n in first..first + count {
                    let key = key_of(partition, n);
                    let payload = payload_of(partition, n);
                    let headers = OwnedHeaders::new()
                        .insert(KafkaHeader {
                            key: "trace",
                            value: Some(&format!("t-{n}")),
                        })
                        .insert(KafkaHeader::<&[u8]> {
                            key: "empty",
                            value: None,
                        });
                    let record = BaseRecord::to(&topic)
                        .partition(partition)
                        .key(&key)
                        .payload(&payload)
                        .headers(headers)
                        .timestamp(BASE_TIMESTAMP_MS + n as i64);
                    producer.send(record).map_err(|(error, _)| error).unwrap();
                    producer.poll(Duration::ZERO);
                }
            }
            producer.flush(DEADLINE).unwrap();
        })
        .await
        .unwrap();
    }

    /// Produces one message without a payload (a tombstone) to partition 0.
    async fn produce_tombstone(&self) {
        self.send(vec![(0, Some("tombstone".into()), None)]).await;
    }

    /// Sends `(partition, key, payload)` records and waits until the broker has them.
    async fn send(&self, records: Vec<(i32, Option<String>, Option<String>)>) {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        // The producer's flush blocks.
        tokio::task::spawn_blocking(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            for (partition, key, payload) in &records {
                let mut record = BaseRecord::<str, str>::to(&topic).partition(*partition);
                if let Some(key) = key {
                    record = record.key(key);
                }
                if let Some(payload) = payload {
                    record = record.payload(payload);
                }
                producer.send(record).map_err(|(error, _)| error).unwrap();
            }
            producer.flush(DEADLINE).unwrap();
        })
        .await
        .unwrap();
    }
}

fn key_of(partition: i32, n: usize) -> String {
    format!("k-{partition}-{n}")
}

fn payload_of(partition: i32, n: usize) -> String {
    format!(r#"{{"partition":{partition},"n":{n}}}"#)
}

/// (partition, offset) of an event.
fn position(event: &Event) -> (i32, i64) {
    match &event.origin {
        Origin::Kafka {
            partition, offset, ..
        } => (*partition, *offset),
        other => panic!("not a kafka origin: {other:?}"),
    }
}

/// Positions per partition, in delivery order.
fn offsets_by_partition(events: &[Event]) -> BTreeMap<i32, Vec<i64>> {
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for event in events {
        let (partition, offset) = position(event);
        by_partition.entry(partition).or_default().push(offset);
    }
    by_partition
}

fn ack_delta(topic: &str, ranges: &[(i32, i64, i64)]) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    for &(partition, first, last) in ranges {
        delta
            .record(&SplitId::kafka(topic, partition), first)
            .unwrap();
        if last > first {
            delta
                .record(&SplitId::kafka(topic, partition), last)
                .unwrap();
        }
    }
    delta
}

#[tokio::test]
async fn delivers_every_message_with_its_metadata_in_partition_order() {
    let cluster = Cluster::new("clicks");
    cluster.produce(0, 10).await;
    cluster.produce_tombstone().await;
    let mut source = KafkaSource::connect(cluster.config("g-meta", KafkaStart::Earliest))
        .await
        .unwrap();

    let events = collect(&mut source, 31).await;

    let by_partition = offsets_by_partition(&events);
    assert_eq!(by_partition[&0], (0..=10).collect::<Vec<i64>>());
    assert_eq!(by_partition[&1], (0..10).collect::<Vec<i64>>());
    assert_eq!(by_partition[&2], (0..10).collect::<Vec<i64>>());
    for event in &events {
        let (partition, offset) = position(event);
        let Origin::Kafka { topic, .. } = &event.origin else {
            unreachable!()
        };
        assert_eq!(&**topic, "clicks");
        if partition == 0 && offset == 10 {
            assert_eq!(event.payload, Bytes::new(), "a null payload becomes empty");
            assert_eq!(event.key, Some(Bytes::from("tombstone")));
            assert!(event.headers.is_empty());
            continue;
        }
        let n = offset as usize;
        assert_eq!(event.payload, Bytes::from(payload_of(partition, n)));
        assert_eq!(event.key, Some(Bytes::from(key_of(partition, n))));
        assert_eq!(
            *event.headers,
            [
                Header {
                    name: "trace".into(),
                    value: Some(Bytes::from(format!("t-{n}"))),
                },
                Header {
                    name: "empty".into(),
                    value: None,
                },
            ]
        );
        assert_eq!(event.timestamp_ms, Some(BASE_TIMESTAMP_MS + n as i64));
    }
    assert_eq!(source.assigned_partitions(), vec![0, 1, 2]);
    source.close().await;
}

#[tokio::test]
async fn resumes_exactly_after_the_acknowledged_offsets() {
    let cluster = Cluster::new("orders");
    cluster.produce(0, 10).await;
    let config = cluster.config("g-resume", KafkaStart::Earliest);

    let mut first = KafkaSource::connect(config.clone()).await.unwrap();
    collect(&mut first, 30).await;
    // Acknowledge in two steps, as the platform does after two batches.
    first
        .ack(&ack_delta("orders", &[(0, 0, 1), (1, 0, 6)]))
        .await
        .unwrap();
    first.ack(&ack_delta("orders", &[(0, 2, 3)])).await.unwrap();
    first.close().await;

    let mut second = KafkaSource::connect(config).await.unwrap();
    let events = collect(&mut second, 6 + 3 + 10).await;
    let by_partition = offsets_by_partition(&events);
    assert_eq!(by_partition[&0], (4..10).collect::<Vec<i64>>());
    assert_eq!(by_partition[&1], (7..10).collect::<Vec<i64>>());
    assert_eq!(by_partition[&2], (0..10).collect::<Vec<i64>>());
    assert_nothing_more(&mut second).await;
    second.close().await;
}

#[tokio::test]
async fn redelivers_everything_that_was_never_acknowledged() {
    let cluster = Cluster::new("payments");
    cluster.produce(0, 5).await;
    let config = cluster.config("g-redeliver", KafkaStart::Earliest);

    let mut first = KafkaSource::connect(config.clone()).await.unwrap();
    let before = collect(&mut first, 15).await;
    first.close().await;

    let mut second = KafkaSource::connect(config).await.unwrap();
    let after = collect(&mut second, 15).await;
    assert_eq!(offsets_by_partition(&after), offsets_by_partition(&before));
    assert_eq!(
        after
            .iter()
            .map(|e| e.payload.clone())
            .collect::<BTreeSet<_>>(),
        before
            .iter()
            .map(|e| e.payload.clone())
            .collect::<BTreeSet<_>>()
    );
    second.close().await;
}

mod conformance;
mod lifecycle;
mod partition_log;
