//! The listing cursor: which objects are done, stored beside the job's output so a restart
//! neither reprocesses nor skips objects.
//!
//! A set of `key → etag`, not a "last key": objects may appear in any key order. An object
//! is done once the output of every record in it is durable (or in the dead letters); a
//! new version of a key (another etag) is a new object. Saved with a whole-object put
//! after every change, which object stores make atomic.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct CursorFile {
    version: u32,
    /// key → etag ("" when the store gives none).
    done: BTreeMap<String, String>,
}

/// The durable set of finished objects.
#[derive(Debug)]
pub struct Cursor {
    store: Arc<dyn ObjectStore>,
    path: Path,
    file: CursorFile,
}

impl Cursor {
    /// Loads the cursor; a missing one is empty.
    pub async fn load(store: Arc<dyn ObjectStore>, path: Path) -> Result<Self, String> {
        let file = match store.get(&path).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| format!("reading {path}: {e}"))?;
                serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{path} is not a sluice cursor: {e}"))?
            }
            Err(object_store::Error::NotFound { .. }) => CursorFile {
                version: 1,
                done: BTreeMap::new(),
            },
            Err(error) => return Err(format!("reading {path}: {error}")),
        };
        Ok(Self { store, path, file })
    }

    pub fn is_done(&self, key: &str, etag: &str) -> bool {
        self.file.done.get(key).is_some_and(|done| done == etag)
    }

    /// Marks objects done and saves the cursor.
    pub async fn mark_done(&mut self, objects: &[(String, String)]) -> Result<(), String> {
        for (key, etag) in objects {
            self.file.done.insert(key.clone(), etag.clone());
        }
        let body = serde_json::to_vec(&self.file).map_err(|e| e.to_string())?;
        self.store
            .put(&self.path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| format!("saving {}: {e}", self.path))
    }

    pub fn len(&self) -> usize {
        self.file.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.file.done.is_empty()
    }
}
