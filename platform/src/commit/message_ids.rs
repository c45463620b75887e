//! Duplicate AMQP messages: a message whose producer-set `message_id` was already
//! processed is not run again (the README's guarantees: "at-least-once from AMQP, exactly
//! once when producers set `message_id`").
//!
//! The broker redelivers every unacknowledged message after a connection drop, a broker
//! restart or a platform crash — also those whose output is already durable — and
//! producers that retry a publish send the same message twice. So:
//!
//! ```text
//! intake:  a message whose id is in `seen` (committed earlier, or taken in this run) is a
//!          duplicate: it is not run, only acknowledged, in its queue's order
//! apply:   the ids of applied batches wait in `uncommitted`
//! commit:  after the output is durable and before the acks, `uncommitted` is written to
//!          `_sluice/amqp-ids/<queue>/<run>-<n>.ids` (one id per line)
//! start:   the id files of the last RETENTION are loaded into `seen`; older ones deleted
//! ```
//!
//! An id taken in this run counts as processed even before its batch commits: the first
//! copy's output is committed, or the job stops and nothing of it was acknowledged. A
//! message without a `message_id` is never a duplicate. `seen` keeps the newest
//! [`CAPACITY`] ids. A crash between the output upload and the id file leaves those
//! messages' ids unrecorded: their redelivery is processed again (at-least-once).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use sluice_connectors::{Classify, Event, Retry};
use tracing::{debug, info, warn};

use crate::output::store::OutputLocation;

/// Where the id files live, under the output prefix.
const DIRECTORY: &str = "_sluice/amqp-ids";
/// How long id files are kept (and loaded).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most ids remembered.
pub const CAPACITY: usize = 2_000_000;

/// Why the ids could not be read or written; retrying later may help.
#[derive(Debug, thiserror::Error)]
#[error("message ids under {path}: {source}")]
pub struct MessageIdError {
    path: String,
    #[source]
    source: object_store::Error,
}

/// Only the store can fail here.
impl Classify for MessageIdError {
    fn retry(&self) -> Retry {
        Retry::Transient
    }
}

/// The message ids of one AMQP job.
#[derive(Debug)]
pub(crate) struct MessageIds {
    location: OutputLocation,
    directory: String,
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    uncommitted: Vec<Arc<str>>,
    run_id: String,
    files: u64,
}

impl MessageIds {
    /// Loads the ids recorded for `queue` during the last [`RETENTION`], deleting older
    /// files.
    pub(crate) async fn load(
        location: OutputLocation,
        queue: &str,
        run_id: &str,
    ) -> Result<Self, MessageIdError> {
        let directory = format!("{DIRECTORY}/{}", escape(queue));
        let mut ids = Self {
            directory: directory.clone(),
            location,
            seen: HashSet::new(),
            order: VecDeque::new(),
            uncommitted: Vec::new(),
            run_id: run_id.to_owned(),
            files: 0,
        };
        let error = |source| MessageIdError {
            path: directory.clone(),
            source,
        };
        let prefix = ids
            .location
            .object_path(&directory)
            .map_err(|e| error(e.into()))?;
        let mut files: Vec<_> = ids
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(error)?;
        files.sort_by_key(|meta| meta.last_modified);
        let cutoff = SystemTime::now() - RETENTION;
        let mut loaded = 0;
        for meta in files {
            if SystemTime::from(meta.last_modified) < cutoff {
                if let Err(source) = ids.location.store.delete(&meta.location).await {
                    warn!(path = %meta.location, %source, "could not delete an expired message-id file");
                }
                continue;
            }
            let bytes = ids
                .location
                .store
                .get(&meta.location)
                .await
                .map_err(error)?
                .bytes()
                .await
                .map_err(error)?;
            for line in String::from_utf8_lossy(&bytes).lines() {
                if !line.is_empty() {
                    ids.remember(Arc::from(line));
                }
            }
            loaded += 1;
        }
        if loaded > 0 {
            info!(
                queue,
                files = loaded,
                ids = ids.seen.len(),
                "loaded the message ids of committed messages"
            );
        }
        Ok(ids)
    }

    fn remember(&mut self, id: Arc<str>) -> bool {
        if !self.seen.insert(Arc::clone(&id)) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Whether `event` repeats a message already processed or taken; remembers it if not.
    pub(crate) fn is_duplicate(&mut self, event: &Event) -> bool {
        let Some(id) = event.origin.message_id() else {
            return false;
        };
        !self.remember(Arc::from(id))
    }

    /// Notes the ids of `events`, whose batch was applied: written with the next commit.
    pub(crate) fn applied(&mut self, events: &[Arc<str>]) {
        self.uncommitted.extend(events.iter().cloned());
    }

    /// Writes the ids applied since the last call (their output is durable).
    pub(crate) async fn persist(&mut self) -> Result<(), MessageIdError> {
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let name = format!("{}/{}-{:06}.ids", self.directory, self.run_id, self.files);
        let error = |source| MessageIdError {
            path: name.clone(),
            source,
        };
        let path = self
            .location
            .object_path(&name)
            .map_err(|e| error(e.into()))?;
        let mut text = String::new();
        for id in &self.uncommitted {
            text.push_str(id);
            text.push('\n');
        }
        self.location
            .store
            .put(&path, PutPayload::from(text.into_bytes()))
            .await
            .map_err(error)?;
        debug!(path = %path, ids = self.uncommitted.len(), "recorded committed message ids");
        self.uncommitted.clear();
        self.files += 1;
        Ok(())
    }
}

/// The message ids of `events` (those that have one).
pub(crate) fn message_ids(events: &[Event]) -> Vec<Arc<str>> {
    events
        .iter()
        .filter_map(|event| event.origin.message_id().map(Arc::from))
        .collect()
}

/// A queue name as one path segment.
fn escape(queue: &str) -> String {
    queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
