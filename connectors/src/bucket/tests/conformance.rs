//! The bucket source runs the source conformance suite twice, over a local folder:
//! discovering objects by listing, and by notifications POSTed to its webhook. Message
//! `n` is the object `n.ndjson` holding the one line `{"n":n}`.

use async_trait::async_trait;

use super::*;
use crate::testing::conformance::{Harness, check_source};

struct Bucket {
    folders: Folders,
    notified: bool,
    /// Objects written but not announced yet (notification mode): a sender retries until
    /// the webhook takes a notice, so the next start is told of them.
    unannounced: Vec<String>,
}

impl Bucket {
    fn new(notified: bool) -> Bucket {
        Bucket {
            folders: folders(),
            notified,
            unannounced: Vec::new(),
        }
    }
}

#[async_trait(?Send)]
impl Harness for Bucket {
    type Source = BucketSource;

    async fn feed(&mut self, numbers: std::ops::Range<usize>) {
        for n in numbers {
            let key = format!("{n:04}.ndjson");
            std::fs::write(self.folders.inbox.join(&key), format!("{{\"n\":{n}}}\n")).unwrap();
            self.unannounced.push(key);
        }
    }

    async fn open(&mut self) -> BucketSource {
        if !self.notified {
            return BucketSource::connect(config(&self.folders, false))
                .await
                .unwrap();
        }
        let source = BucketSource::connect(notification_config(&self.folders))
            .await
            .unwrap();
        let address = source.notification_address().unwrap();
        for key in self.unannounced.drain(..) {
            let etag = format!("e-{key}");
            assert_eq!(post(address, &aws_body(&key, &etag)).await, 200);
        }
        source
    }

    fn number(&self, event: &Event) -> usize {
        let value: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        value["n"].as_u64().unwrap() as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_bucket_source_conforms() {
    check_source(&mut Bucket::new(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notified_bucket_source_conforms() {
    check_source(&mut Bucket::new(true)).await;
}
