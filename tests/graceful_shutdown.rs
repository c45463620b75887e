//! `sluice run`, then SIGTERM while events flow: it exits 0 within 10 s; a second run
//! resumes from the committed offsets; together they write every record.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const EVENTS: usize = 6000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_events_flow_then_resume() {
    let env = env();
    let job = JobDir::example_on_new_topic(&env, "graceful", 3).await;
    let topic = job.topic.clone();

    let producer_env = common::env();
    let producer_topic = topic.clone();
    let producer = tokio::spawn(async move {
        let mut ends = std::collections::BTreeMap::new();
        for chunk in 0..30 {
            let payloads: Vec<_> = (chunk * 200..(chunk + 1) * 200)
                .map(|i| (format!("user-{i}"), Click::numbered(i).json()))
                .collect();
            for (p, end) in produce(&producer_env, &producer_topic, &payloads).await {
                let e = ends.entry(p).or_insert(0);
                *e = end.max(*e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ends
    });

    let mut first = Sluice::run(&env, &job, "first");
    wait_for("a first commit", Duration::from_secs(60), async || {
        first.assert_running();
        !committed(&env, &job.group(), &topic, 3).is_empty()
    })
    .await;
    assert!(
        !producer.is_finished(),
        "events must still be flowing at SIGTERM"
    );
    first.stop_cleanly(Duration::from_secs(10));
    assert!(
        first.logs().contains("shutdown requested"),
        "{}",
        first.logs()
    );
    let after_first = committed(&env, &job.group(), &topic, 3);

    let ends = producer.await.unwrap();
    assert_eq!(ends.values().sum::<i64>(), EVENTS as i64);
    let mut second = Sluice::run(&env, &job, "second");
    wait_committed(&env, &job, &mut second, &ends, Duration::from_secs(120)).await;
    second.stop_cleanly(Duration::from_secs(10));

    let rows = read_rows(&env, &job.prefix).await;
    let counts = count_ids(&rows);
    let missing: Vec<_> = (0..EVENTS)
        .map(|i| Click::numbered(i).event_id)
        .filter(|id| !counts.contains_key(id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "records missing after restart: {missing:?}"
    );
    // A graceful stop commits everything it wrote, so the second run starts exactly where
    // the first stopped: no record is written twice either.
    assert!(
        counts.values().all(|&n| n == 1),
        "duplicates after a graceful stop (first run committed {after_first:?})"
    );
    assert_eq!(rows.len(), EVENTS);
}
