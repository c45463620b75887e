//! The platform selects over `next_events` and drops the future whenever a timer or a
//! finished batch wins, possibly in the middle of a spool or cursor write. Nothing the
//! source decided may be lost with it.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt as _};
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::*;

/// A store whose first delete of each path never answers (a request lost on the way),
/// and whose later deletes of it go through.
#[derive(Debug)]
struct FirstDeleteHangs {
    inner: Arc<LocalFileSystem>,
    tried: Arc<Mutex<HashSet<Path>>>,
}

impl fmt::Display for FirstDeleteHangs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirstDeleteHangs")
    }
}

#[async_trait]
impl ObjectStore for FirstDeleteHangs {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (inner, tried) = (self.inner.clone(), self.tried.clone());
        locations
            .then(move |location| {
                let (inner, tried) = (inner.clone(), tried.clone());
                async move {
                    let location = location?;
                    if tried.lock().unwrap().insert(location.clone()) {
                        std::future::pending::<()>().await;
                    }
                    inner.delete(&location).await.map(|()| location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn hanging_config(folders: &Folders) -> BucketSourceConfig {
    let state = Arc::new(FirstDeleteHangs {
        inner: Arc::new(LocalFileSystem::new_with_prefix(&folders.state).unwrap()),
        tried: Arc::default(),
    });
    BucketSourceConfig {
        discovery: Discovery::Notifications {
            feed: Box::new(NotificationFeed::Webhook {
                listen: "127.0.0.1:0".parse().unwrap(),
            }),
            filter: NoticeFilter::default(),
            spool: NoticeSpool::new(state, Path::from("_sluice/bucket/notices")),
        },
        ..config(folders, false)
    }
}

/// Polls `next_events` the way the platform's select does: dropped after a short while.
async fn poll_briefly(source: &mut BucketSource) -> Option<Vec<Event>> {
    tokio::time::timeout(Duration::from_millis(100), source.next_events())
        .await
        .ok()
        .map(|r| r.unwrap().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_future_loses_neither_a_done_object_nor_a_repeat() {
    let folders = folders();
    for name in ["a.ndjson", "b.ndjson", "c.ndjson"] {
        std::fs::write(folders.inbox.join(name), "{\"n\":1}\n{\"n\":2}\n").unwrap();
    }
    let mut source = BucketSource::connect(hanging_config(&folders))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    for name in ["a.ndjson", "b.ndjson", "c.ndjson"] {
        assert_eq!(post(address, &aws_body(name, name)).await, 200);
    }

    // Objects read to their end before their acknowledgement (a and b, the usual order)
    // and one acknowledged before its end was seen (c): the acknowledgement takes their
    // notices out of the spool. The first delete of each entry hangs and is dropped with
    // the future; a later poll deletes it again.
    let mut events = Vec::new();
    for _ in 0..50 {
        events.extend(poll_briefly(&mut source).await.unwrap_or_default());
        if events.len() == 6 {
            break;
        }
    }
    assert_eq!(events.len(), 6, "every record once");
    let _ = tokio::time::timeout(Duration::from_millis(100), source.ack(&delta_of(&events))).await;
    for _ in 0..50 {
        assert!(
            poll_briefly(&mut source).await.is_none(),
            "nothing read twice"
        );
        if spooled(&folders).await == 0 {
            break;
        }
    }
    assert_eq!(spooled(&folders).await, 0, "done objects leave the spool");

    // Repeats are put in the spool by the endpoint and dropped by the source; a drop
    // whose delete hangs is finished by a later poll.
    for name in ["a.ndjson", "b.ndjson", "c.ndjson"] {
        assert_eq!(post(address, &aws_body(name, name)).await, 200);
    }
    for _ in 0..50 {
        assert!(
            poll_briefly(&mut source).await.is_none(),
            "a repeat is not read"
        );
        if spooled(&folders).await == 0 {
            break;
        }
    }
    assert_eq!(spooled(&folders).await, 0, "repeats leave the spool");
    drop(source);
    let mut source = BucketSource::connect(notification_config(&folders))
        .await
        .unwrap();
    assert!(next(&mut source).await.is_none(), "nothing read again");
}
