//! An object store that fails or hangs chosen requests: a test double implementing the
//! real [`ObjectStore`] trait over any inner store, for tests of what happens when a store
//! misbehaves (an upload that fails, a request that never answers, a process that dies in
//! the middle of a write). Built with the `testing` feature.
//!
//! ```
//! use std::sync::Arc;
//! use object_store::memory::InMemory;
//! use object_store::path::Path;
//! use sluice_connectors::faulty_store::{Fault, Faults, FaultyStore, Request};
//!
//! /// Every delete fails.
//! #[derive(Debug)]
//! struct NoDeletes;
//!
//! impl Faults for NoDeletes {
//!     fn before(&self, request: Request, _location: &Path) -> Fault {
//!         match request {
//!             Request::Delete => Fault::Fail("deletes are off"),
//!             _ => Fault::Pass,
//!         }
//!     }
//! }
//!
//! let store = FaultyStore::new(Arc::new(InMemory::new()), NoDeletes);
//! # let _ = store;
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt as _};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// A request a [`FaultyStore`] is about to pass to its inner store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A whole-object upload.
    Put,
    /// The start of a multipart upload.
    Multipart,
    Delete,
    /// A read of an object (whole or a range); `head` requests always pass.
    Get,
}

/// What happens to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// It reaches the inner store.
    Pass,
    /// It fails with this reason, without reaching the inner store.
    Fail(&'static str),
    /// It never answers, as a request lost on the way (or a process that died) would.
    Hang,
}

/// Decides the fate of each write, delete and read; listings always pass.
pub trait Faults: fmt::Debug + Send + Sync + 'static {
    fn before(&self, request: Request, location: &Path) -> Fault;
}

/// See the module docs.
#[derive(Debug)]
pub struct FaultyStore<F> {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<F>,
}

impl<F: Faults> FaultyStore<F> {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: F) -> Self {
        Self {
            inner,
            faults: Arc::new(faults),
        }
    }

    /// The store behind the faults, to look at what really got written.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub fn faults(&self) -> &F {
        &self.faults
    }
}

async fn apply(
    faults: &impl Faults,
    request: Request,
    location: &Path,
) -> object_store::Result<()> {
    match faults.before(request, location) {
        Fault::Pass => Ok(()),
        Fault::Fail(reason) => Err(object_store::Error::Generic {
            store: "faulty",
            source: format!("injected failure: {reason}").into(),
        }),
        Fault::Hang => std::future::pending().await,
    }
}

impl<F> fmt::Display for FaultyStore<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl<F: Faults> ObjectStore for FaultyStore<F> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        apply(&*self.faults, Request::Put, location).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        apply(&*self.faults, Request::Multipart, location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if !options.head {
            apply(&*self.faults, Request::Get, location).await?;
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (inner, faults) = (self.inner.clone(), self.faults.clone());
        locations
            .then(move |location| {
                let (inner, faults) = (inner.clone(), faults.clone());
                async move {
                    let location = location?;
                    apply(&*faults, Request::Delete, &location).await?;
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
