//! The listing cursor: which objects are done, stored beside the job's output so a restart
//! neither reprocesses nor skips objects.
//!
//! A set of `key → etag`, not a "last key": objects may appear in any key order. An object
//! is done once the output of every record in it is durable (or in the dead letters); a
//! new version of a key (another etag) is a new object.
//!
//! Stored as a base and a log, so marking objects done costs what they weigh, not what
//! the whole set weighs:
//!
//! ```text
//! _sluice/bucket/cursor.json                    base: {"version":2,"through":N,"done":{key: etag, …}}
//! _sluice/bucket/cursor.d/<seq, 20 digits>.json one per mark_done: {"done":{key: etag, …}}
//! ```
//!
//! Each `mark_done` puts one new log entry (a whole-object put, which object stores make
//! atomic). Once the log holds more than [`COMPACT_MIN`] entries and more than one per
//! [`COMPACT_RATIO`] done objects, the whole set is written as the base, with `through`
//! naming the last entry folded in, and those entries are deleted. Loading reads the base
//! and then every entry after `through` in order; entries at or before it are leftovers of
//! a compaction cut short and are deleted. A version-1 base (the whole set, no log) loads
//! as a base with `through = 0`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Compact no sooner than this many log entries.
const COMPACT_MIN: usize = 64;
/// … and not before there is one entry per this many done objects, so rewriting the base
/// costs at most this many objects' worth per entry, and a load reads at most one entry
/// per this many objects.
const COMPACT_RATIO: usize = 256;

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct CursorFile {
    version: u32,
    /// The last log entry folded into this base.
    #[serde(default)]
    through: u64,
    /// key → etag ("" when the store gives none).
    done: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LogEntry {
    done: BTreeMap<String, String>,
}

/// The durable set of finished objects.
#[derive(Debug)]
pub struct Cursor {
    store: Arc<dyn ObjectStore>,
    path: Path,
    log: Path,
    done: BTreeMap<String, String>,
    /// Log entries written since the base (sequence numbers).
    entries: Vec<u64>,
    next: u64,
}

impl Cursor {
    /// Loads the cursor at `path` and its log beside it; a missing one is empty.
    pub async fn load(store: Arc<dyn ObjectStore>, path: Path) -> Result<Self, String> {
        let base: CursorFile = read_json(&store, &path).await?.unwrap_or_default();
        let log = log_folder(&path);
        let mut listed: Vec<(u64, Path)> = store
            .list(Some(&log))
            .map_ok(|meta| meta.location)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| format!("listing {log}: {e}"))?
            .into_iter()
            .filter_map(|location| Some((sequence_of(&location)?, location)))
            .collect();
        listed.sort();
        let mut cursor = Self {
            store,
            path,
            log,
            done: base.done,
            entries: Vec::new(),
            next: base.through + 1,
        };
        for (sequence, location) in listed {
            if sequence <= base.through {
                cursor.delete_entry(&location).await;
                continue;
            }
            let Some(entry) = read_json::<LogEntry>(&cursor.store, &location).await? else {
                continue;
            };
            cursor.done.extend(entry.done);
            cursor.entries.push(sequence);
            cursor.next = sequence + 1;
        }
        Ok(cursor)
    }

    pub fn is_done(&self, key: &str, etag: &str) -> bool {
        self.done.get(key).is_some_and(|done| done == etag)
    }

    /// Marks objects done and saves them (one log entry; sometimes a compaction too).
    /// Calling it again with the same objects after an error is harmless.
    pub async fn mark_done(&mut self, objects: &[(String, String)]) -> Result<(), String> {
        let entry = LogEntry {
            done: objects.iter().cloned().collect(),
        };
        self.done.extend(entry.done.clone());
        // Taken before the put: a put dropped halfway leaves at most a gap, and a retry
        // never overwrites an entry that may have landed.
        let sequence = self.next;
        self.next += 1;
        let location = self.entry_path(sequence);
        let body = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        self.store
            .put(&location, PutPayload::from(body))
            .await
            .map_err(|e| format!("saving {location}: {e}"))?;
        self.entries.push(sequence);
        // The entry is durable, so the objects are done whatever compaction does: a
        // failed one is only reported, and tried again after the next mark.
        if self.entries.len() > COMPACT_MIN.max(self.done.len() / COMPACT_RATIO)
            && let Err(error) = self.compact().await
        {
            warn!(%error, "could not fold the cursor's log into its base; the log stays valid and folding is tried again later");
        }
        Ok(())
    }

    /// Writes the whole set as the base, then deletes the log entries folded into it.
    async fn compact(&mut self) -> Result<(), String> {
        let through = self.next - 1;
        let base = CursorFile {
            version: 2,
            through,
            done: self.done.clone(),
        };
        let body = serde_json::to_vec(&base).map_err(|e| e.to_string())?;
        self.store
            .put(&self.path, PutPayload::from(body))
            .await
            .map_err(|e| format!("saving {}: {e}", self.path))?;
        for sequence in std::mem::take(&mut self.entries) {
            let location = self.entry_path(sequence);
            self.delete_entry(&location).await;
        }
        Ok(())
    }

    /// Deletes a log entry the base holds; a failure leaves a leftover the next load
    /// deletes.
    async fn delete_entry(&self, location: &Path) {
        match self.store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => {
                warn!(%location, %error, "could not delete a compacted cursor entry; the next start deletes it")
            }
        }
    }

    fn entry_path(&self, sequence: u64) -> Path {
        self.log
            .clone()
            .join(format!("{sequence:020}.json").as_str())
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}

/// `…/cursor.json` → `…/cursor.d`.
fn log_folder(path: &Path) -> Path {
    let mut parts: Vec<_> = path.parts().collect();
    let file = parts.pop();
    let file = file.as_ref().map_or("cursor.json", |part| part.as_ref());
    let stem = file.strip_suffix(".json").unwrap_or(file);
    let folder = format!("{stem}.d");
    Path::from_iter(parts.into_iter().chain([folder.as_str().into()]))
}

fn sequence_of(location: &Path) -> Option<u64> {
    location.filename()?.strip_suffix(".json")?.parse().ok()
}

/// Reads and parses a JSON object; `None` when it does not exist.
async fn read_json<T: serde::de::DeserializeOwned>(
    store: &Arc<dyn ObjectStore>,
    location: &Path,
) -> Result<Option<T>, String> {
    match store.get(location).await {
        Ok(found) => {
            let bytes = found
                .bytes()
                .await
                .map_err(|e| format!("reading {location}: {e}"))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{location} is not a sluice cursor: {e}"))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(format!("reading {location}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn marks(range: std::ops::Range<usize>) -> Vec<(String, String)> {
        range
            .map(|n| (format!("in/{n}.csv"), format!("e{n}")))
            .collect()
    }

    async fn put(store: &Arc<dyn ObjectStore>, path: &str, body: &str) {
        store
            .put(&Path::from(path), PutPayload::from(body.to_owned()))
            .await
            .unwrap();
    }

    async fn stored(store: &Arc<dyn ObjectStore>) -> Vec<String> {
        let mut names: Vec<String> = store
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        names
    }

    #[tokio::test]
    async fn marks_are_logged_compacted_and_loaded_back() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("_sluice/bucket/cursor.json");
        let mut cursor = Cursor::load(store.clone(), path.clone()).await.unwrap();
        assert!(cursor.is_empty());
        cursor.mark_done(&marks(0..1)).await.unwrap();
        assert_eq!(
            stored(&store).await,
            ["_sluice/bucket/cursor.d/00000000000000000001.json"],
            "one small entry, no base yet"
        );
        for n in 1..100 {
            cursor.mark_done(&marks(n..n + 1)).await.unwrap();
        }
        let names = stored(&store).await;
        assert!(names.contains(&"_sluice/bucket/cursor.json".to_owned()));
        assert!(names.len() <= COMPACT_MIN + 1, "compacted: {names:?}");

        let loaded = Cursor::load(store.clone(), path.clone()).await.unwrap();
        assert_eq!(loaded.len(), 100);
        assert!(loaded.is_done("in/0.csv", "e0") && loaded.is_done("in/99.csv", "e99"));
        assert!(!loaded.is_done("in/99.csv", "other etag"));
        assert_eq!(loaded.next, cursor.next, "numbering goes on");
    }

    #[tokio::test]
    async fn leftovers_of_a_cut_compaction_are_dropped_and_old_bases_load() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("state/cursor.json");
        // An entry folded into the base whose delete never happened, and a later one.
        put(
            &store,
            "state/cursor.d/00000000000000000003.json",
            r#"{"done":{"b.csv":"old"}}"#,
        )
        .await;
        let base = r#"{"version":2,"through":3,"done":{"a.csv":"e1","b.csv":"e2"}}"#;
        put(&store, "state/cursor.json", base).await;
        put(
            &store,
            "state/cursor.d/00000000000000000004.json",
            r#"{"done":{"c.csv":"e3"}}"#,
        )
        .await;
        let cursor = Cursor::load(store.clone(), path.clone()).await.unwrap();
        assert!(cursor.is_done("a.csv", "e1"));
        assert!(
            cursor.is_done("b.csv", "e2"),
            "the leftover does not override"
        );
        assert!(cursor.is_done("c.csv", "e3"));
        assert_eq!(cursor.next, 5);
        assert_eq!(
            stored(&store).await,
            [
                "state/cursor.d/00000000000000000004.json",
                "state/cursor.json"
            ]
        );

        // A version-1 cursor: the whole set in one file, no log.
        let legacy: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        put(
            &legacy,
            "state/cursor.json",
            r#"{"version":1,"done":{"a.csv":"e1"}}"#,
        )
        .await;
        let cursor = Cursor::load(legacy, path).await.unwrap();
        assert!(cursor.is_done("a.csv", "e1"));
        assert_eq!(cursor.next, 1);
    }
}
