//! The partition log the commit protocol reads and heals through: a range read again
//! exactly, and offsets committed from outside the group.

use super::*;
use crate::testing::drain;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_is_read_again_exactly_and_ends() {
    use crate::checkpoint::PositionRange;
    use crate::kafka::{KafkaPartitionLog, PartitionLog};

    let cluster = Cluster::new("range");
    cluster.produce(0, 20).await;
    let log = KafkaPartitionLog::new(cluster.config("range-group", KafkaStart::Earliest));

    let mut source = log
        .read_range(1, PositionRange { first: 5, last: 12 })
        .await
        .unwrap();
    let events = drain(source.as_mut()).await;
    source.close().await;
    let positions: Vec<_> = events.iter().map(position).collect();
    assert_eq!(positions, (5..=12).map(|o| (1, o)).collect::<Vec<_>>());
    assert_eq!(events[0].payload, Bytes::from(payload_of(1, 5)));

    // A range past the end of the partition ends at the end.
    let mut source = log
        .read_range(
            2,
            PositionRange {
                first: 18,
                last: 40,
            },
        )
        .await
        .unwrap();
    let positions: Vec<_> = drain(source.as_mut()).await.iter().map(position).collect();
    source.close().await;
    assert_eq!(positions, vec![(2, 18), (2, 19)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_from_outside_the_group_and_a_member_resumes_there() {
    use crate::kafka::{KafkaPartitionLog, PartitionLog};

    let cluster = Cluster::new("heal");
    cluster.produce(0, 10).await;
    let config = cluster.config("heal-group", KafkaStart::Earliest);
    let log = KafkaPartitionLog::new(config.clone());
    assert!(log.committed_offsets(&[0, 1, 2]).await.unwrap().is_empty());

    let offsets = BTreeMap::from([(0, 7), (2, 10)]);
    log.commit_offsets(&offsets).await.unwrap();
    assert_eq!(log.committed_offsets(&[0, 1, 2]).await.unwrap(), offsets);

    // A member of the group resumes from those offsets.
    let mut source = KafkaSource::connect(config).await.unwrap();
    let events = collect(&mut source, 3 + 10).await;
    let by_partition = offsets_by_partition(&events);
    assert_eq!(by_partition[&0], vec![7, 8, 9]);
    assert_eq!(by_partition[&1], (0..10).collect::<Vec<_>>());
    assert!(!by_partition.contains_key(&2));
    source.close().await;
}
