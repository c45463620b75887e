//! The commit protocol as the pipeline drives it, one range per split per commit: offsets
//! of a Kafka partition, or lines of one object version — any split a connector can read
//! again (`sluice_connectors::RangeLog`). See `design.md` beside this file for the state
//! machine and the crash analysis.
//!
//! ```text
//! let ranges  = committer.ranges(&pending);             // names the objects
//! sink.finish_open_files(&ranges)?;
//! let staged  = committer.stage(&ranges, objects, dead_letters).await?;  // intents
//! sink.flush().await?; dead_letters.flush(&ranges).await?;               // uploads
//! let done    = staged.commit(&mut committer).await?;   // commit markers
//! source.ack(&pending).await?;                          // offsets, cursor
//! committer.prune(&done).await;                         // older markers
//! ```
//!
//! Invariants: an object named from a range is uploaded only after the range's intent (or
//! redo) marker lists it; a commit marker is written only after every object it lists is
//! durable; positions are acknowledged only after the commit marker. Splits that cannot be
//! read again (AMQP queues, samples; `SplitId::range_folder` is `None`) take no part
//! (their output keeps run-id names, at-least-once).

use std::collections::BTreeMap;

use sluice_connectors::{CheckpointDelta, Event, PositionRange, RangeLog, SplitId};
use tracing::{debug, info, warn};

use super::marker::{CommitError, MarkerStore, RangeManifest, delete_object};
use super::names::MarkerKind;
use crate::output::store::OutputLocation;

/// Drives the markers of one job's output. See the module docs.
#[derive(Debug)]
pub struct Committer {
    markers: MarkerStore,
    /// Where the job's dead letters go (a redo deletes stale ones there).
    dead_letters: OutputLocation,
    /// Per split that takes part, the latest range with a commit marker.
    committed: BTreeMap<SplitId, PositionRange>,
    /// Recovery only: per split, the range being written again, listing every object an
    /// earlier attempt may have written.
    redo: BTreeMap<SplitId, RangeManifest>,
}

impl Committer {
    /// A committer for a normal run over the splits of `log` (`None`: the job's splits
    /// cannot be read again, so none takes part). Reads the latest commit marker of every
    /// split, so events at or below it are recognised as already written. Fails with
    /// [`CommitError::Unfinished`] when a range was left unfinished: recovery must run
    /// first, or the next range would be written beside the unfinished one's objects.
    pub async fn load(
        output: OutputLocation,
        dead_letters: OutputLocation,
        log: Option<&dyn RangeLog>,
    ) -> Result<Self, CommitError> {
        let markers = MarkerStore::new(output);
        let mut committed = BTreeMap::new();
        if let Some(log) = log {
            for (split, found) in markers.list(&log.range_folder()).await? {
                if let Some(range) = found.unfinished() {
                    return Err(CommitError::Unfinished {
                        url: markers.location().url.clone(),
                        split: split.to_string(),
                        first: range.first,
                        last: range.last,
                    });
                }
                if let Some(range) = found.latest_commit() {
                    committed.insert(split, range);
                }
            }
        }
        Ok(Self {
            markers,
            dead_letters,
            committed,
            redo: BTreeMap::new(),
        })
    }

    /// A committer that writes one unfinished range again, with the same boundaries.
    /// `earlier` lists every object earlier attempts may have written (the intent's, plus
    /// any redo marker's).
    pub(crate) fn for_redo(
        markers: MarkerStore,
        dead_letters: OutputLocation,
        latest_commit: Option<PositionRange>,
        earlier: RangeManifest,
    ) -> Self {
        let split = earlier.split();
        let committed = latest_commit
            .map(|range| (split.clone(), range))
            .into_iter()
            .collect();
        Self {
            markers,
            dead_letters,
            committed,
            redo: BTreeMap::from([(split, earlier)]),
        }
    }

    /// True when a commit marker already covers `event` (a record at or below the last
    /// position of its split's latest committed range: a Kafka offset, a line of an object
    /// version): its output is written, and writing it again would duplicate it. `split`
    /// is the event's own, passed in so a caller going through a run of one split's events
    /// builds it once (see [`Origin::split_cached`]).
    ///
    /// [`Origin::split_cached`]: sluice_connectors::Origin::split_cached
    pub fn already_committed(&self, event: &Event, split: &SplitId) -> bool {
        debug_assert!(
            event.origin.in_split(split),
            "{split} is not the event's split"
        );
        self.committed
            .get(split)
            .is_some_and(|range| event.origin.position() <= range.last)
    }

    /// True while a redo is unfinished: its range must be committed even if it read
    /// nothing, and never split by an early flush.
    pub fn redoing(&self) -> bool {
        !self.redo.is_empty()
    }

    /// The range each split's output of this commit is named from: the pending positions
    /// after the split's committed range (positions the pipeline skipped as already
    /// written, such as the lines of an object read again, are acknowledged, never
    /// named), or in a redo the unfinished range's own boundaries.
    pub fn ranges(&self, pending: &CheckpointDelta) -> BTreeMap<SplitId, PositionRange> {
        if self.redoing() {
            return self
                .redo
                .iter()
                .map(|(split, manifest)| (split.clone(), manifest.range()))
                .collect();
        }
        pending
            .iter()
            .filter_map(|(split, range)| {
                split.range_folder()?;
                let after = self.committed.get(split).map_or(i64::MIN, |c| c.last + 1);
                let range = PositionRange {
                    first: range.first.max(after),
                    last: range.last,
                };
                (range.first <= range.last).then(|| (split.clone(), range))
            })
            .collect()
    }

    /// Step (a): makes durable, per range, which objects this commit will write — an
    /// intent marker (create-only), or in a redo a redo marker listing those objects and
    /// every object earlier attempts listed. Idempotent: calling it again after a failure
    /// is safe.
    pub async fn stage(
        &self,
        ranges: &BTreeMap<SplitId, PositionRange>,
        objects: &BTreeMap<SplitId, Vec<String>>,
        dead_letters: &BTreeMap<SplitId, String>,
    ) -> Result<Staged, CommitError> {
        let mut manifests = Vec::with_capacity(ranges.len());
        for (split, range) in ranges {
            let Some(mut manifest) = RangeManifest::for_split(split, *range) else {
                continue;
            };
            manifest.objects = objects.get(split).cloned().unwrap_or_default();
            manifest.dead_letters = dead_letters.get(split).cloned().into_iter().collect();
            manifest.objects.sort();
            match self.redo.get(split) {
                Some(earlier) => {
                    let mut everything = manifest.clone();
                    everything.absorb(earlier);
                    self.markers.put(MarkerKind::Redo, &everything).await?;
                }
                None => self.markers.put(MarkerKind::Intent, &manifest).await?,
            }
            manifests.push(manifest);
        }
        Ok(Staged { manifests })
    }

    /// Step (e): after the positions are acknowledged, deletes the markers of each
    /// split's previous committed range; the latest intent and commit stay. Failures
    /// are only logged: a later prune or recovery deletes what is left.
    pub async fn prune(&self, done: &Committed) {
        for (manifest, previous) in &done.ranges {
            let Some(previous) = previous else { continue };
            if *previous == manifest.range() {
                continue;
            }
            for kind in [MarkerKind::Intent, MarkerKind::Redo, MarkerKind::Commit] {
                if let Err(error) = self
                    .markers
                    .delete(&manifest.split(), *previous, kind)
                    .await
                {
                    warn!(split = %manifest.split(), %error, "could not delete an older commit marker; a later commit deletes it");
                }
            }
        }
    }
}

/// Ranges whose intent (or redo) markers are durable and whose objects may be uploaded.
#[derive(Debug)]
#[must_use = "a staged range is committed only by Staged::commit"]
pub struct Staged {
    manifests: Vec<RangeManifest>,
}

/// Ranges whose commit markers are durable, with each split's previously committed
/// range (for pruning).
#[derive(Debug)]
pub struct Committed {
    ranges: Vec<(RangeManifest, Option<PositionRange>)>,
}

impl Committed {
    /// How many ranges were committed.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

impl Staged {
    /// Steps (b′) and (c): called once every listed object is durable. In a redo, first
    /// deletes the objects earlier attempts wrote that this one did not; then writes
    /// each range's commit marker (create-only) and records the range as committed.
    /// Idempotent: calling it again after a failure is safe.
    pub async fn commit(&self, committer: &mut Committer) -> Result<Committed, CommitError> {
        let mut ranges = Vec::with_capacity(self.manifests.len());
        for manifest in &self.manifests {
            let split = manifest.split();
            if let Some(earlier) = committer.redo.get(&split) {
                delete_stale(committer, earlier, manifest).await?;
            }
            committer.markers.put(MarkerKind::Commit, manifest).await?;
            debug!(%split, first = manifest.first, last = manifest.last, objects = manifest.objects.len(), "range committed");
            if committer.redo.remove(&split).is_some() {
                info!(%split, first = manifest.first, last = manifest.last, objects = manifest.objects.len(), "unfinished range written again and committed");
            }
            let previous = committer.committed.insert(split, manifest.range());
            ranges.push((manifest.clone(), previous));
        }
        Ok(Committed { ranges })
    }
}

/// Deletes what `earlier` attempts listed and `now` did not write again.
async fn delete_stale(
    committer: &Committer,
    earlier: &RangeManifest,
    now: &RangeManifest,
) -> Result<(), CommitError> {
    let stale = earlier
        .objects
        .iter()
        .filter(|o| !now.objects.contains(o))
        .map(|o| (committer.markers.location(), o));
    let stale_dead = earlier
        .dead_letters
        .iter()
        .filter(|o| !now.dead_letters.contains(o))
        .map(|o| (&committer.dead_letters, o));
    for (location, object) in stale.chain(stale_dead) {
        let path = object_store::path::Path::parse(object).map_err(|e| CommitError::Corrupt {
            path: object.clone(),
            message: e.to_string(),
        })?;
        delete_object(location, &path).await?;
        info!(split = %now.split(), object = %object, "deleted an object the interrupted attempt wrote and the redo did not");
    }
    Ok(())
}
