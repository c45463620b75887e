//! The Kafka source from start to close: where it starts, its backlog, a slow platform,
//! closing and dropping it, and the errors it reports.

use super::*;

#[tokio::test]
async fn latest_start_skips_existing_messages_and_delivers_new_ones() {
    let cluster = Cluster::new("views");
    cluster.produce(0, 5).await;
    let mut source = KafkaSource::connect(cluster.config("g-latest", KafkaStart::Latest))
        .await
        .unwrap();
    wait_until("all partitions assigned", || {
        let assigned = source.assigned_partitions();
        async move { assigned == vec![0, 1, 2] }
    })
    .await;

    // The start position is resolved after the assignment, asynchronously: keep producing
    // until every partition has delivered something new.
    let started = Instant::now();
    let mut produced = 5;
    let mut partitions_seen = BTreeSet::new();
    while partitions_seen.len() < PARTITIONS as usize {
        assert!(
            started.elapsed() < DEADLINE,
            "no new messages within {DEADLINE:?}"
        );
        cluster.produce(produced, 1).await;
        produced += 1;
        while let Ok(result) =
            tokio::time::timeout(Duration::from_millis(300), source.next_events()).await
        {
            for event in result.unwrap().unwrap() {
                let (partition, offset) = position(&event);
                assert!(offset >= 5, "old message delivered: {partition}/{offset}");
                assert_eq!(
                    event.payload,
                    Bytes::from(payload_of(partition, offset as usize))
                );
                partitions_seen.insert(partition);
            }
        }
    }
    source.close().await;
}

#[tokio::test]
async fn reports_the_backlog_until_it_is_acknowledged() {
    let cluster = Cluster::new("metrics");
    cluster.produce(0, 10).await;
    let mut source = KafkaSource::connect(cluster.config("g-backlog", KafkaStart::Earliest))
        .await
        .unwrap();

    // Nothing committed yet: every message is backlog, delivered or not.
    wait_until("backlog of 30", || {
        let backlog = source.backlog();
        async move { backlog == Some(30) }
    })
    .await;
    let events = collect(&mut source, 30).await;
    assert_eq!(source.backlog(), Some(30));

    let mut delta = CheckpointDelta::new();
    for event in &events {
        // Offsets grow within each partition, as delivered.
        delta
            .record(&event.origin.split(), event.origin.position())
            .unwrap();
    }
    source.ack(&delta).await.unwrap();
    wait_until("backlog of 0 after the ack", || {
        let backlog = source.backlog();
        async move { backlog == Some(0) }
    })
    .await;

    cluster.produce(10, 2).await;
    wait_until("backlog of 6 after new messages", || {
        let backlog = source.backlog();
        async move { backlog == Some(6) }
    })
    .await;
    source.close().await;
}

#[tokio::test]
async fn keeps_order_and_serves_the_group_while_the_platform_is_slow() {
    // Far more than the channel holds (8 chunks of at most 1000 events), so the poll
    // thread waits with the partitions paused, then resumes.
    const PER_PARTITION: usize = 5000;
    let cluster = Cluster::new("bulk");
    cluster.produce(0, PER_PARTITION).await;
    let mut source = KafkaSource::connect(cluster.config("g-bulk", KafkaStart::Earliest))
        .await
        .unwrap();

    // Statistics keep coming while nobody takes events.
    let total = (PER_PARTITION * PARTITIONS as usize) as u64;
    wait_until("backlog known while the channel is full", || {
        let backlog = source.backlog();
        async move { backlog == Some(total) }
    })
    .await;

    let events = collect(&mut source, total as usize).await;
    let expected: Vec<i64> = (0..PER_PARTITION as i64).collect();
    for (partition, offsets) in offsets_by_partition(&events) {
        assert_eq!(offsets, expected, "partition {partition}");
    }
    assert_nothing_more(&mut source).await;
    source.close().await;
}

#[tokio::test]
async fn close_is_prompt_and_leaves_the_source_unusable() {
    let cluster = Cluster::new("audit");
    cluster.produce(0, 3).await;
    let mut source = KafkaSource::connect(cluster.config("g-close", KafkaStart::Earliest))
        .await
        .unwrap();
    let events = collect(&mut source, 9).await;
    assert_eq!(source.assigned_partitions(), vec![0, 1, 2]);

    let watch = source.state_watch();
    tokio::time::timeout(Duration::from_secs(10), source.close())
        .await
        .expect("close did not finish within 10 s");
    // Closing the consumer revoked its partitions, and only the source holds its state:
    // the poll thread has ended and the consumer is destroyed.
    assert!(source.assigned_partitions().is_empty());
    assert_eq!(watch.strong_count(), 1);
    let delta = ack_delta("audit", &[(position(&events[0]).0, 0, 0)]);
    assert!(matches!(
        source.ack(&delta).await,
        Err(SourceError::Ack { .. })
    ));
    assert!(source.next_events().await.is_err());
    // A second close is harmless.
    source.close().await;
}

#[tokio::test]
async fn dropping_the_source_stops_the_thread_and_closes_the_consumer() {
    let cluster = Cluster::new("sessions");
    cluster.produce(0, 2).await;
    let config = cluster.config("g-drop", KafkaStart::Earliest);

    let mut first = KafkaSource::connect(config.clone()).await.unwrap();
    collect(&mut first, 6).await;
    let watch = first.state_watch();
    drop(first);
    // The poll thread and the consumer both hold the state: it is freed once the thread
    // has ended and the consumer is destroyed.
    wait_until("poll thread ended and consumer destroyed", || {
        let alive = watch.strong_count();
        async move { alive == 0 }
    })
    .await;

    // The group is free for the next member, which gets every partition and the
    // messages the first one never acknowledged.
    let mut second = KafkaSource::connect(config).await.unwrap();
    let events = collect(&mut second, 6).await;
    assert_eq!(second.assigned_partitions(), vec![0, 1, 2]);
    assert_eq!(offsets_by_partition(&events).len(), 3);
    second.close().await;
}

#[tokio::test]
async fn refuses_to_acknowledge_positions_of_another_topic() {
    let cluster = Cluster::new("refunds");
    let mut source = KafkaSource::connect(cluster.config("g-foreign", KafkaStart::Earliest))
        .await
        .unwrap();
    let err = source
        .ack(&ack_delta("other", &[(0, 0, 3)]))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Internal { .. }), "{err}");
    assert!(err.to_string().contains("other/0"), "{err}");
    // An empty delta commits nothing and succeeds.
    source.ack(&CheckpointDelta::new()).await.unwrap();
    source.close().await;
}

#[tokio::test]
async fn rejects_a_bad_configuration_before_connecting() {
    let cluster = Cluster::new("bad");
    let mut config = cluster.config("g-bad", KafkaStart::Earliest);
    config
        .options
        .insert("enable.auto.commit".into(), "true".into());
    let err = KafkaSource::connect(config).await.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");

    let mut config = cluster.config("g-bad", KafkaStart::Earliest);
    config.options.insert("no.such.property".into(), "1".into());
    let err = KafkaSource::connect(config).await.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("no.such.property"), "{err}");
}

#[tokio::test]
async fn reports_an_authorization_failure_through_next_events() {
    let cluster = Cluster::new("secret");
    cluster
        .mock
        .topic_error(
            "secret",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let mut source = KafkaSource::connect(cluster.config("g-denied", KafkaStart::Earliest))
        .await
        .unwrap();
    let result = tokio::time::timeout(DEADLINE, source.next_events())
        .await
        .expect("no error within the deadline");
    let err = result.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("secret"), "{err}");
    source.close().await;
}

#[test]
fn redeliveries_after_a_rebalance_are_not_handed_over_twice() {
    let mut handed_over = crate::kafka::poll_loop::HandedOver::default();
    assert!(handed_over.admit(0, 10));
    assert!(handed_over.admit(0, 11));
    assert!(handed_over.admit(1, 0), "partitions are independent");
    // The partition comes back and librdkafka fetches from the committed offset again.
    assert!(!handed_over.admit(0, 5));
    assert!(!handed_over.admit(0, 11));
    assert!(handed_over.admit(0, 12));
    // Gaps (compaction, transaction markers) are fine.
    assert!(handed_over.admit(0, 40));
}

#[tokio::test]
async fn the_lag_of_a_group_that_is_not_consuming_counts_what_it_has_not_committed() {
    let cluster = Cluster::new("lagging");
    cluster.produce(0, 10).await;
    let config = cluster.config("g-lag", KafkaStart::Earliest);
    assert_eq!(super::super::lag::group_lag(&config).await.unwrap(), 30);

    let mut source = KafkaSource::connect(config.clone()).await.unwrap();
    collect(&mut source, 30).await;
    source
        .ack(&ack_delta("lagging", &[(0, 0, 3), (1, 0, 9)]))
        .await
        .unwrap();
    source.close().await;
    assert_eq!(super::super::lag::group_lag(&config).await.unwrap(), 6 + 10);

    cluster.produce(10, 5).await;
    assert_eq!(
        super::super::lag::group_lag(&config).await.unwrap(),
        16 + 15
    );
    let latest = cluster.config("g-lag-latest", KafkaStart::Latest);
    assert_eq!(super::super::lag::group_lag(&latest).await.unwrap(), 0);
}
