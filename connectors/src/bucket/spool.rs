//! Accepted notifications, kept durably until their object is done.
//!
//! A notification is acknowledged to its sender (HTTP 200) only once it is in the spool:
//! an object under `<output>/_sluice/bucket/notices/` named from the object's identity
//! (bucket, key, etag or version), so the same notification delivered twice is one entry.
//! The entry is removed once every record of the object has durable output; on start, the
//! source picks up every entry still there. An entry whose object is still missing
//! `missing_timeout` after it was received is given up: it becomes one dead letter (the
//! notification, with the reason) and leaves the spool like a done object.
//!
//! The spool is bounded ([`SpoolLimits`]: entries and bytes). A new entry that would pass
//! a bound is refused (the endpoint answers 503, so the sender retries later); entries
//! already there may be rewritten. The usage is counted in memory, from the listing made
//! at start and every put and removal since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::notification::ObjectNotice;

/// Most entries and bytes a spool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    /// 100,000 entries, 256 MiB.
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NoticeSpool {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    limits: SpoolLimits,
    /// What the spool holds, shared by clones.
    usage: Arc<Mutex<Usage>>,
}

/// Entry name → size, and their sum.
#[derive(Debug, Default)]
struct Usage {
    sizes: HashMap<String, u64>,
    bytes: u64,
}

impl NoticeSpool {
    /// `prefix` is the spool folder, e.g. `<output prefix>/_sluice/bucket/notices`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self {
            store,
            prefix,
            limits: SpoolLimits::default(),
            usage: Arc::default(),
        }
    }

    pub fn with_limits(mut self, limits: SpoolLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts `path` at `size`, unless it is new and would pass a limit.
    fn reserve(&self, path: &Path, size: u64) -> Result<(), String> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let key = path.to_string();
        let previous = usage.sizes.get(&key).copied();
        let bytes = usage.bytes - previous.unwrap_or(0) + size;
        let entries = usage.sizes.len() + usize::from(previous.is_none());
        if previous.is_none()
            && (entries > self.limits.max_entries || bytes > self.limits.max_bytes)
        {
            return Err(format!(
                "the notification spool is full ({} entries; at most {} entries and {} bytes); retry once pending objects are processed",
                usage.sizes.len(),
                self.limits.max_entries,
                self.limits.max_bytes
            ));
        }
        usage.sizes.insert(key, size);
        usage.bytes = bytes;
        Ok(())
    }

    fn release(&self, path: &Path) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(size) = usage.sizes.remove(&path.to_string()) {
            usage.bytes -= size;
        }
    }

    fn entry(&self, notice: &ObjectNotice) -> Path {
        let version = notice
            .version_id
            .as_deref()
            .or(notice.etag.as_deref())
            .unwrap_or("");
        // One path segment: the identity, percent-encoded by `Path::from_iter`'s parts.
        let name = format!("{}|{}|{version}.json", notice.bucket, notice.key);
        Path::from_iter(self.prefix.parts().chain([name.as_str().into()]))
    }

    /// Keeps `notice`, stamped with the time it was received unless it carries one.
    pub async fn put(&self, notice: &ObjectNotice) -> Result<(), String> {
        let mut stamped = notice.clone();
        if stamped.received_ms.is_none() {
            stamped.received_ms = Some(now_ms());
        }
        let body = serde_json::to_vec(&stamped).map_err(|e| e.to_string())?;
        let path = self.entry(notice);
        self.reserve(&path, body.len() as u64)?;
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| format!("saving notification {path}: {e}"))
    }

    pub async fn remove(&self, notice: &ObjectNotice) -> Result<(), String> {
        let path = self.entry(notice);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.release(&path);
                Ok(())
            }
            Err(e) => Err(format!("removing notification {path}: {e}")),
        }
    }

    /// Every spooled notice, in name order.
    pub async fn list(&self) -> Result<Vec<ObjectNotice>, String> {
        let mut entries: Vec<_> = self
            .store
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| format!("listing notifications under {}: {e}", self.prefix))?;
        entries.sort_by(|a, b| a.location.cmp(&b.location));
        {
            let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
            usage.sizes = entries
                .iter()
                .map(|entry| (entry.location.to_string(), entry.size))
                .collect();
            usage.bytes = usage.sizes.values().sum();
        }
        let mut notices = Vec::with_capacity(entries.len());
        for entry in entries {
            let body = self
                .store
                .get(&entry.location)
                .await
                .map_err(|e| format!("reading {}: {e}", entry.location))?
                .bytes()
                .await
                .map_err(|e| format!("reading {}: {e}", entry.location))?;
            let notice = serde_json::from_slice(&body)
                .map_err(|e| format!("{} is not a spooled notification: {e}", entry.location))?;
            notices.push(notice);
        }
        Ok(notices)
    }
}

/// Milliseconds since the epoch, now.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
