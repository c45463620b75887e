//! The AMQP source's connection: reconnecting after the server drops it or an ack fails,
//! closing promptly, and first-connection errors that say whose fault they are.

use super::*;

#[tokio::test]
async fn reconnects_with_monotonic_positions_after_the_server_drops_it() {
    let broker = Broker::new("reconnect", true).await;
    broker.publish(0..5).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let before = collect(&mut source, 5).await;
    assert_eq!(
        before.iter().map(seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    broker.drop_source_connection().await;
    broker.publish(5..8).await;
    // The five unacknowledged deliveries come again on the new channel, then the new ones.
    let after = collect(&mut source, 8).await;
    let positions: Vec<i64> = before.iter().chain(&after).map(seq).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "positions grow across the reconnection: {positions:?}"
    );
    assert_eq!(
        after.iter().map(number).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6, 7]
    );
    assert!(after[..5].iter().all(|event| amqp(event).5), "redelivered");
    assert!(after[5..].iter().all(|event| !amqp(event).5));
    assert_eq!(amqp(&after[0]).1, 1, "tags restart on the new channel");

    // The platform acknowledges everything it holds: the old channel's positions are
    // skipped, the new channel's acknowledged.
    let last = seq(&after[7]);
    source.ack(&delta(&broker.queue, 1, last)).await.unwrap();
    assert_eq!(source.unacked(), 0);
    wait_until("acks reach the broker", || async {
        broker.counts().await.0 == 0
    })
    .await;
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn a_failed_ack_replaces_the_channel_and_its_deliveries_come_again() {
    let broker = Broker::new("reset", true).await;
    broker.publish(0..3).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let before = collect(&mut source, 3).await;
    // What a failed basic.ack does: the channel, which may now hold deliveries nobody
    // will acknowledge, is replaced.
    source.reset_live_session();
    let after = collect(&mut source, 3).await;
    assert_eq!(after.iter().map(number).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(after.iter().all(|event| amqp(event).5), "redelivered");
    assert_eq!(after.iter().map(seq).collect::<Vec<_>>(), vec![4, 5, 6]);
    source
        .ack(&delta(&broker.queue, seq(&before[0]), 6))
        .await
        .unwrap();
    assert_eq!(source.unacked(), 0);
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn close_is_prompt_and_final() {
    let broker = Broker::new("close", true).await;
    broker.publish(0..3).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    collect(&mut source, 3).await;
    let started = Instant::now();
    source.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        started.elapsed()
    );
    assert!(matches!(
        source.next_events().await,
        Err(SourceError::Internal { .. })
    ));
    assert!(source.ack(&delta(&broker.queue, 1, 3)).await.is_err());
    source.close().await; // idempotent
    wait_until("the 3 messages are back", || async {
        broker.counts().await == (3, 0)
    })
    .await;

    // Closing while reconnecting is prompt too.
    let mut config = broker.config();
    config.min_backoff = Duration::from_secs(3);
    config.max_backoff = Duration::from_secs(3);
    let mut source = AmqpSource::connect(config).await.unwrap();
    collect(&mut source, 3).await;
    broker.drop_source_connection().await;
    let started = Instant::now();
    source.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        started.elapsed()
    );
    drain(&broker).await;
    broker.finish().await;
}

/// Consumes and acknowledges whatever the queue holds, with a fresh source.
async fn drain(broker: &Broker) {
    wait_until("the queue has no consumer", || async {
        broker.counts().await.1 == 0
    })
    .await;
    let (ready, _) = broker.counts().await;
    if ready == 0 {
        return;
    }
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let events = collect(&mut source, ready as usize).await;
    source
        .ack(&delta(&broker.queue, 1, seq(events.last().unwrap())))
        .await
        .unwrap();
    source.close().await;
}

#[tokio::test]
async fn first_connection_errors_say_whose_fault() {
    let broker = Broker::new("errors", false).await;
    // A queue that does not exist, without declare: the user's to fix.
    let err = AmqpSource::connect(broker.config()).await.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("NOT-FOUND"), "{err}");

    let mut wrong_password = broker.config();
    wrong_password.url = "amqp://guest:wrong-secret@127.0.0.1:5672/%2f".into();
    let err = AmqpSource::connect(wrong_password).await.unwrap_err();
    assert!(matches!(err, SourceError::Config { .. }), "{err}");
    assert!(err.to_string().contains("ACCESS-REFUSED"), "{err}");
    assert!(!err.to_string().contains("wrong-secret"), "{err}");

    let mut nothing_there = broker.config();
    nothing_there.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let err = AmqpSource::connect(nothing_there).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable { .. }), "{err}");

    let mut other_split = AmqpSource::connect({
        let mut config = broker.config();
        config.declare = true;
        config
    })
    .await
    .unwrap();
    let err = other_split
        .ack(&delta("another-queue", 1, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Internal { .. }), "{err}");
    other_split.close().await;
    broker.finish().await;
}
