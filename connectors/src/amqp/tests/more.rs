//! More AMQP source tests (continued from `tests.rs`).

use super::*;

#[tokio::test]
async fn delivers_payload_headers_and_metadata_in_order() {
    let broker = Broker::new("order", true).await;
    broker.publish(0..20).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let events = collect(&mut source, 20).await;
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.payload, payload_of(n).as_bytes(), "payload order");
        assert_eq!(event.key, None);
        assert_eq!(
            event.timestamp_ms,
            Some((TIMESTAMP_S + n as u64) as i64 * 1000)
        );
        let (seq, tag, message_id, exchange, routing_key, redelivered) = amqp(event);
        assert_eq!(seq, n as i64 + 1, "positions count from 1");
        assert_eq!(tag, n as u64 + 1, "first channel: tags from 1");
        assert_eq!(message_id, Some(format!("m-{n}").as_str()));
        assert_eq!(exchange, "");
        assert_eq!(routing_key, broker.queue);
        assert!(!redelivered);
        assert_eq!(event.origin.split(), SplitId::amqp(&broker.queue));
        assert_eq!(header(event, "trace"), Some(format!("t-{n}").as_bytes()));
        assert_eq!(header(event, "attempt"), Some(n.to_string().as_bytes()));
        assert_eq!(header(event, "flag"), Some(&b"true"[..]));
        assert_eq!(header(event, "raw"), Some(&[0xff, 0x00][..]));
        assert_eq!(header(event, "nothing"), None);
        assert_eq!(event.headers.len(), 5);
    }
    let json = events[3].origin.to_json();
    assert_eq!(json["message_id"], "m-3");
    assert_eq!(json["seq"], 4);
    assert_eq!(json["queue"], broker.queue.as_str());
    source.ack(&delta(&broker.queue, 1, 20)).await.unwrap();
    wait_until("acks reach the broker", || async {
        source.unacked() == 0 && broker.counts().await.0 == 0
    })
    .await;
    source.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn ack_covers_exactly_the_acked_deliveries() {
    let broker = Broker::new("ack", true).await;
    broker.publish(0..10).await;
    let mut source = AmqpSource::connect(broker.config()).await.unwrap();
    let events = collect(&mut source, 10).await;
    assert_eq!(seq(&events[5]), 6);
    source.ack(&delta(&broker.queue, 1, 6)).await.unwrap();
    assert_eq!(source.unacked(), 4);
    // Acknowledging the same positions again sends nothing (a second ack of a tag would
    // make the broker close the channel).
    source.ack(&delta(&broker.queue, 1, 6)).await.unwrap();
    source.close().await;
    // Closing without acking returns the 4 others to the queue.
    wait_until("the 4 unacked messages are back", || async {
        broker.counts().await == (4, 0)
    })
    .await;

    let mut again = AmqpSource::connect(broker.config()).await.unwrap();
    let redelivered = collect(&mut again, 4).await;
    assert_eq!(
        redelivered.iter().map(number).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    assert!(
        redelivered.iter().all(|event| amqp(event).5),
        "redelivered flag"
    );
    assert_nothing_more(&mut again).await;
    again.ack(&delta(&broker.queue, 1, 4)).await.unwrap();
    assert_eq!(again.unacked(), 0);
    again.close().await;
    broker.finish().await;
}

#[tokio::test]
async fn declares_a_durable_queue_and_binds_it() {
    let broker = Broker::new("bind", false).await;
    let mut config = broker.config();
    let topic = unique("clicks");
    config.declare = true;
    config.exchange = Some("amq.topic".into());
    config.routing_keys = vec![format!("{topic}.*"), format!("{topic}-exact")];
    let mut source = AmqpSource::connect(config).await.unwrap();
    broker
        .publish_to("amq.topic", &format!("{topic}.eu"), 1)
        .await;
    broker.publish_to("amq.topic", "elsewhere", 2).await;
    broker
        .publish_to("amq.topic", &format!("{topic}-exact"), 3)
        .await;
    let events = collect(&mut source, 2).await;
    assert_eq!(events.iter().map(number).collect::<Vec<_>>(), vec![1, 3]);
    let (_, _, _, exchange, routing_key, _) = amqp(&events[0]);
    assert_eq!(exchange, "amq.topic");
    assert_eq!(routing_key, format!("{topic}.eu"));
    assert_nothing_more(&mut source).await;
    source.ack(&delta(&broker.queue, 1, 2)).await.unwrap();
    source.close().await;
    broker.finish().await;
}

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
async fn reports_backlog_of_ready_and_unacked_messages() {
    let broker = Broker::new("backlog", true).await;
    broker.publish(0..30).await;
    let mut config = broker.config();
    config.prefetch = 10;
    let mut source = AmqpSource::connect(config).await.unwrap();
    let first = collect(&mut source, 10).await;
    // 20 ready in the queue plus the 10 this source holds.
    wait_until("backlog of 30", || {
        let backlog = source.backlog();
        async move { backlog == Some(30) }
    })
    .await;
    source
        .ack(&delta(&broker.queue, 1, seq(&first[9])))
        .await
        .unwrap();
    // The broker sends the next ten only once the first ten are acknowledged.
    for _ in 0..2 {
        let more = collect(&mut source, 10).await;
        source
            .ack(&delta(&broker.queue, seq(&more[0]), seq(&more[9])))
            .await
            .unwrap();
    }
    wait_until("backlog drains to 0", || {
        let backlog = source.backlog();
        async move { backlog == Some(0) }
    })
    .await;
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
