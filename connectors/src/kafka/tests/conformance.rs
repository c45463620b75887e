//! The Kafka source runs the source conformance suite against the mock cluster: message
//! `n` goes to partition `n % PARTITIONS`, so every start reads all three partitions.

use async_trait::async_trait;

use super::*;
use crate::testing::conformance::{Harness, check_source};

struct Topic {
    cluster: Cluster,
}

#[async_trait(?Send)]
impl Harness for Topic {
    type Source = KafkaSource;

    async fn feed(&mut self, numbers: std::ops::Range<usize>) {
        let records = numbers
            .map(|n| {
                let partition = (n % PARTITIONS as usize) as i32;
                (partition, None, Some(format!(r#"{{"n":{n}}}"#)))
            })
            .collect();
        self.cluster.send(records).await;
    }

    async fn open(&mut self) -> KafkaSource {
        let config = self.cluster.config("g-conformance", KafkaStart::Earliest);
        KafkaSource::connect(config).await.unwrap()
    }

    fn number(&self, event: &Event) -> usize {
        let value: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        value["n"].as_u64().unwrap() as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_source_conforms() {
    check_source(&mut Topic {
        cluster: Cluster::new("conformance"),
    })
    .await;
}
