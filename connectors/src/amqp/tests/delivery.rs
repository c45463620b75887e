//! What the AMQP source hands over and acknowledges: payload, headers and metadata in
//! order, acks of exactly the acknowledged deliveries, the queue it declares, its backlog.

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
