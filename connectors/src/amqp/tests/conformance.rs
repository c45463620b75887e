//! The AMQP source runs the source conformance suite on a queue of its own.

use async_trait::async_trait;

use super::*;
use crate::testing::conformance::{Harness, check_source};

struct Queue {
    broker: Broker,
}

#[async_trait(?Send)]
impl Harness for Queue {
    type Source = AmqpSource;

    async fn feed(&mut self, numbers: std::ops::Range<usize>) {
        self.broker.publish(numbers).await;
    }

    async fn open(&mut self) -> AmqpSource {
        AmqpSource::connect(self.broker.config()).await.unwrap()
    }

    /// Closes the source and waits until the broker has let go of its consumer (and so
    /// returned its unacknowledged deliveries to the queue).
    async fn stop(&mut self, mut source: AmqpSource) {
        source.close().await;
        wait_until("the queue has no consumer", || async {
            self.broker.counts().await.1 == 0
        })
        .await;
    }

    fn number(&self, event: &Event) -> usize {
        number(event)
    }
}

#[tokio::test]
async fn the_amqp_source_conforms() {
    let mut queue = Queue {
        broker: Broker::new("conformance", true).await,
    };
    check_source(&mut queue).await;
    queue.broker.finish().await;
}
