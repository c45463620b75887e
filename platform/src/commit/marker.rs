//! Commit markers in the output store: what each range (of a Kafka partition's offsets,
//! or of an object version's lines) wrote, and how far it got.
//!
//! A marker is a small JSON object (a [`RangeManifest`]) at a name derived from the range
//! (see [`super::names`]). Intent and commit markers are written with a create-only
//! conditional put (`PutMode::Create`), which the S3 endpoint and the local file system
//! both honour, so two writers can never both believe they own a range: a create that
//! finds the marker already there succeeds only if the marker says the same thing (our own
//! earlier attempt whose answer was lost), and is a [`CommitError::Conflict`] otherwise.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sluice_connectors::range_log::SplitRecord;
use sluice_connectors::{Classify, PositionRange, Retry, SplitId};

use super::names::{MarkerKind, marker_file, parse_marker_file, split_marker_name};
use crate::output::store::OutputLocation;

pub use sluice_connectors::range_log::ObjectVersion;

/// What a range writes: the content of its intent, redo and commit markers. It names its
/// split with the fields of a [`SplitRecord`]: a topic and partition, or an object
/// version (and no topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeManifest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    #[serde(default)]
    pub partition: i32,
    /// The object version whose lines `first..=last` the range covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectVersion>,
    pub first: i64,
    pub last: i64,
    /// Parquet objects, as stored (output prefix included).
    pub objects: Vec<String>,
    /// Dead-letter objects, as stored in the dead-letter location.
    #[serde(default)]
    pub dead_letters: Vec<String>,
}

impl RangeManifest {
    /// An empty manifest for `range` of `split`; `None` for splits outside the protocol.
    pub fn for_split(split: &SplitId, range: PositionRange) -> Option<Self> {
        let SplitRecord {
            topic,
            partition,
            object,
        } = SplitRecord::of(split)?;
        Some(Self {
            topic,
            partition,
            object,
            first: range.first,
            last: range.last,
            objects: Vec::new(),
            dead_letters: Vec::new(),
        })
    }

    /// The split the range belongs to.
    pub fn split(&self) -> SplitId {
        SplitRecord {
            topic: self.topic.clone(),
            partition: self.partition,
            object: self.object.clone(),
        }
        .split()
    }

    pub fn range(&self) -> PositionRange {
        PositionRange {
            first: self.first,
            last: self.last,
        }
    }

    /// Adds every object of `other` not listed yet.
    pub fn absorb(&mut self, other: &RangeManifest) {
        for object in &other.objects {
            if !self.objects.contains(object) {
                self.objects.push(object.clone());
            }
        }
        for object in &other.dead_letters {
            if !self.dead_letters.contains(object) {
                self.dead_letters.push(object.clone());
            }
        }
    }
}

/// The commit protocol failed. `Store` errors are the store's (retrying may help);
/// `Conflict` and `Corrupt` are not fixed by retrying.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("commit marker {path}: {source}; retrying may help")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "commit marker {path} already exists and lists other objects: another instance of this job writes the same split, or the markers were edited; stop the other writer"
    )]
    Conflict { path: String },
    #[error("commit marker {path} is not a valid marker: {message} (edited or damaged)")]
    Corrupt { path: String, message: String },
    #[error(
        "output {url}: split {split} has an unfinished range {first}..={last} (an intent without a commit marker); run recovery before consuming"
    )]
    Unfinished {
        url: String,
        split: String,
        first: i64,
        last: i64,
    },
    #[error("invalid object name {name}: {message} (internal error)")]
    Path { name: String, message: String },
}

/// Only the store's failures may pass.
impl Classify for CommitError {
    fn retry(&self) -> Retry {
        Retry::when(matches!(self, CommitError::Store { .. }))
    }
}

/// Marker ranges found for one split.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionMarkers {
    pub intents: BTreeSet<(i64, i64)>,
    pub commits: BTreeSet<(i64, i64)>,
    pub redos: BTreeSet<(i64, i64)>,
}

impl PartitionMarkers {
    /// The committed range with the highest positions.
    pub fn latest_commit(&self) -> Option<PositionRange> {
        self.commits
            .last()
            .map(|&(first, last)| PositionRange { first, last })
    }

    /// The latest intent when it has no commit marker: the range a crash interrupted.
    pub fn unfinished(&self) -> Option<PositionRange> {
        let &(first, last) = self.intents.last()?;
        let committed = self.commits.last().is_some_and(|&(_, l)| l >= last);
        (!committed).then_some(PositionRange { first, last })
    }
}

/// Reads and writes one output's markers.
#[derive(Debug, Clone)]
pub struct MarkerStore {
    location: OutputLocation,
}

impl MarkerStore {
    pub fn new(location: OutputLocation) -> Self {
        Self { location }
    }

    pub fn location(&self) -> &OutputLocation {
        &self.location
    }

    fn path(
        &self,
        split: &SplitId,
        range: PositionRange,
        kind: MarkerKind,
    ) -> Result<object_store::path::Path, CommitError> {
        let name = split_marker_name(split, range, kind).ok_or_else(|| CommitError::Path {
            name: split.to_string(),
            message: "this split has no commit markers".into(),
        })?;
        self.location
            .object_path(&name)
            .map_err(|e| CommitError::Path {
                name,
                message: e.to_string(),
            })
    }

    /// Writes `manifest` as the `kind` marker of its range. Intent and commit markers are
    /// create-only (see the module docs); redo markers overwrite.
    pub async fn put(&self, kind: MarkerKind, manifest: &RangeManifest) -> Result<(), CommitError> {
        let split = manifest.split();
        let path = self.path(&split, manifest.range(), kind)?;
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| CommitError::Corrupt {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let mode = match kind {
            MarkerKind::Redo => PutMode::Overwrite,
            MarkerKind::Intent | MarkerKind::Commit => PutMode::Create,
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self
            .location
            .store
            .put_opts(&path, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let found = self.get(&split, manifest.range(), kind).await?;
                if found.as_ref() == Some(manifest) {
                    Ok(())
                } else {
                    Err(CommitError::Conflict {
                        path: path.to_string(),
                    })
                }
            }
            Err(source) => Err(CommitError::Store {
                path: path.to_string(),
                source,
            }),
        }
    }

    /// The `kind` marker of a range, `None` when there is none.
    pub async fn get(
        &self,
        split: &SplitId,
        range: PositionRange,
        kind: MarkerKind,
    ) -> Result<Option<RangeManifest>, CommitError> {
        let path = self.path(split, range, kind)?;
        self.read(&path).await
    }

    async fn read(
        &self,
        path: &object_store::path::Path,
    ) -> Result<Option<RangeManifest>, CommitError> {
        let store_error = |source| CommitError::Store {
            path: path.to_string(),
            source,
        };
        let bytes = match self.location.store.get(path).await {
            Ok(result) => result.bytes().await.map_err(store_error)?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(store_error(source)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CommitError::Corrupt {
                path: path.to_string(),
                message: e.to_string(),
            })
    }

    /// Every split's markers below `folder` (a range log's folder, one sub-folder per
    /// split), by split. A sub-folder's split is read from its latest marker (one read
    /// per split); objects that are not markers are ignored.
    pub async fn list(
        &self,
        folder: &str,
    ) -> Result<BTreeMap<SplitId, PartitionMarkers>, CommitError> {
        let mut by_split = BTreeMap::new();
        for (group, markers) in self.list_folders(folder).await? {
            let latest = markers
                .intents
                .last()
                .map(|&(first, last)| (first, last, MarkerKind::Intent))
                .or_else(|| {
                    markers
                        .commits
                        .last()
                        .map(|&(f, l)| (f, l, MarkerKind::Commit))
                });
            let Some((first, last, kind)) = latest else {
                continue;
            };
            let range = PositionRange { first, last };
            let name = format!("{folder}/{group}/{}", marker_file(range, kind));
            let manifest = self
                .get_named(&name)
                .await?
                .ok_or_else(|| CommitError::Corrupt {
                    path: name.clone(),
                    message: "the marker disappeared while listing".into(),
                })?;
            by_split.insert(manifest.split(), markers);
        }
        Ok(by_split)
    }

    /// Markers below `folder`, grouped by the folder's next segment.
    async fn list_folders(
        &self,
        folder: &str,
    ) -> Result<BTreeMap<String, PartitionMarkers>, CommitError> {
        let prefix = self
            .location
            .object_path(folder)
            .map_err(|e| CommitError::Path {
                name: folder.to_owned(),
                message: e.to_string(),
            })?;
        let objects: Vec<_> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| CommitError::Store {
                path: prefix.to_string(),
                source,
            })?;
        let mut found: BTreeMap<String, PartitionMarkers> = BTreeMap::new();
        let prefix = format!("{prefix}/");
        for object in objects {
            let location = object.location.to_string();
            let Some((group, (range, kind))) = location
                .strip_prefix(&prefix)
                .and_then(|tail| tail.split_once('/'))
                .and_then(|(group, file)| Some((group, parse_marker_file(file)?)))
            else {
                continue;
            };
            let markers = found.entry(group.to_owned()).or_default();
            let set = match kind {
                MarkerKind::Intent => &mut markers.intents,
                MarkerKind::Commit => &mut markers.commits,
                MarkerKind::Redo => &mut markers.redos,
            };
            set.insert((range.first, range.last));
        }
        Ok(found)
    }

    /// The marker at `name` (relative to the output prefix), `None` when there is none.
    async fn get_named(&self, name: &str) -> Result<Option<RangeManifest>, CommitError> {
        let path = self
            .location
            .object_path(name)
            .map_err(|e| CommitError::Path {
                name: name.to_owned(),
                message: e.to_string(),
            })?;
        self.read(&path).await
    }

    /// Deletes a range's `kind` marker; a missing one is fine.
    pub async fn delete(
        &self,
        split: &SplitId,
        range: PositionRange,
        kind: MarkerKind,
    ) -> Result<(), CommitError> {
        let path = self.path(split, range, kind)?;
        delete_object(&self.location, &path).await
    }
}

/// Deletes one object; a missing one is fine.
pub async fn delete_object(
    location: &OutputLocation,
    path: &object_store::path::Path,
) -> Result<(), CommitError> {
    match location.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(CommitError::Store {
            path: path.to_string(),
            source,
        }),
    }
}
