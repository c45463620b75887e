//! Recovery on start: finishes every range a crash left unfinished, then lets the
//! connector bring its own positions up to the committed ranges. Runs before the job's
//! source connects (a Kafka source joins its consumer group only afterwards). One loop
//! for every trigger whose splits can be read again: what differs per kind of split is
//! the connector's [`RangeLog`]. See `design.md` for why each step is safe to repeat.
//!
//! ```text
//! for split in markers(log.range_folder()):
//!     if latest intent has no commit marker:
//!         redo: log.read_range(split, first..=last) → function → schema → same object
//!               names; delete objects earlier attempts listed that the redo did not
//!               write; commit marker
//!     delete markers older than the latest committed range
//! log.heal(latest committed range of every split)     // e.g. a group's offsets
//! ```

use std::collections::BTreeMap;

use sluice_connectors::{PositionRange, RangeLog, SourceError, SplitId};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::committer::Committer;
use super::marker::{CommitError, MarkerStore, PartitionMarkers, RangeManifest};
use super::names::MarkerKind;
use crate::output::store::{OutputLocation, StoreError};
use crate::pipeline::{Job, JobError};
use crate::spec::JobSpec;

/// Recovery could not finish; the job must not start consuming.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("recovery: output store: {0}")]
    Store(#[from] StoreError),
    #[error("recovery: {0}")]
    Commit(#[from] CommitError),
    #[error("recovery: reading positions {first}..={last} of {split} again: {source}")]
    Read {
        split: SplitId,
        first: i64,
        last: i64,
        #[source]
        source: SourceError,
    },
    #[error("recovery: writing positions {first}..={last} of {split} again: {source}")]
    Redo {
        split: SplitId,
        first: i64,
        last: i64,
        #[source]
        source: Box<JobError>,
    },
}

/// What recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unfinished ranges written again and committed, by split.
    pub redone: BTreeMap<SplitId, PositionRange>,
    /// The connector's positions moved forward to the committed ranges (split → next
    /// position), e.g. a consumer group's offsets.
    pub healed: BTreeMap<SplitId, i64>,
    /// Older markers deleted.
    pub pruned: usize,
}

/// Recovers the output of a job whose splits `log` reads, before it consumes: see the
/// module docs.
pub async fn recover(
    spec: &JobSpec,
    log: &dyn RangeLog,
    output: OutputLocation,
    dead_letters: OutputLocation,
) -> Result<RecoveryReport, RecoveryError> {
    let markers = MarkerStore::new(output.clone());
    let redo = Redo {
        spec,
        log,
        markers: &markers,
        output: &output,
        dead_letters: &dead_letters,
    };
    let mut report = RecoveryReport::default();
    let mut latest: BTreeMap<SplitId, PositionRange> = BTreeMap::new();
    for (split, found) in markers.list(&log.range_folder()).await? {
        let mut keep = found.latest_commit();
        if let Some(range) = found.unfinished() {
            redo.range(&split, &found, range).await?;
            report.redone.insert(split.clone(), range);
            keep = Some(range);
        }
        if let Some(keep) = keep {
            report.pruned += prune_split(&markers, &split, &found, keep).await;
            latest.insert(split, keep);
        }
    }
    report.healed = heal(spec, log, &latest).await;
    if !report.redone.is_empty() || !report.healed.is_empty() || report.pruned > 0 {
        info!(job = %spec.name, redone = report.redone.len(), healed = report.healed.len(), pruned = report.pruned, "recovery done");
    }
    Ok(report)
}

/// What writing an unfinished range again needs.
struct Redo<'a> {
    spec: &'a JobSpec,
    log: &'a dyn RangeLog,
    markers: &'a MarkerStore,
    output: &'a OutputLocation,
    dead_letters: &'a OutputLocation,
}

impl Redo<'_> {
    /// Writes the unfinished `range` of `split` again with the same boundaries, through a
    /// job over a source of exactly that range and a committer that finishes it.
    async fn range(
        &self,
        split: &SplitId,
        found: &PartitionMarkers,
        range: PositionRange,
    ) -> Result<(), RecoveryError> {
        let earlier = everything_listed(self.markers, split, range).await?;
        info!(job = %self.spec.name, %split, first = range.first, last = range.last, objects = earlier.objects.len(), "found an unfinished range; writing it again");
        let committer = Committer::for_redo(
            self.markers.clone(),
            self.dead_letters.clone(),
            found.latest_commit(),
            earlier,
        );
        let source =
            self.log
                .read_range(split, range)
                .await
                .map_err(|source| RecoveryError::Read {
                    split: split.clone(),
                    first: range.first,
                    last: range.last,
                    source,
                })?;
        Job::from_parts(
            self.spec,
            self.output.clone(),
            self.dead_letters.clone(),
            committer,
            source,
        )
        .run(CancellationToken::new())
        .await
        .map_err(|source| RecoveryError::Redo {
            split: split.clone(),
            first: range.first,
            last: range.last,
            source: Box::new(source),
        })?;
        Ok(())
    }
}

/// The intent's objects plus any a redo marker of the same range lists.
async fn everything_listed(
    markers: &MarkerStore,
    split: &SplitId,
    range: PositionRange,
) -> Result<RangeManifest, CommitError> {
    let intent = markers
        .get(split, range, MarkerKind::Intent)
        .await?
        .ok_or_else(|| CommitError::Corrupt {
            path: format!("{split}:{}..={}", range.first, range.last),
            message: "the intent marker disappeared while recovering".into(),
        })?;
    let mut everything = intent;
    if let Some(redo) = markers.get(split, range, MarkerKind::Redo).await? {
        everything.absorb(&redo);
    }
    Ok(everything)
}

/// Deletes every marker of `split` except those of `keep`; returns how many.
/// Failures are only logged: the next prune deletes what is left.
async fn prune_split(
    markers: &MarkerStore,
    split: &SplitId,
    found: &PartitionMarkers,
    keep: PositionRange,
) -> usize {
    let kinds = [
        (MarkerKind::Intent, &found.intents),
        (MarkerKind::Redo, &found.redos),
        (MarkerKind::Commit, &found.commits),
    ];
    let mut pruned = 0;
    for (kind, ranges) in kinds {
        for &(first, last) in ranges {
            let range = PositionRange { first, last };
            if range == keep {
                continue;
            }
            match markers.delete(split, range, kind).await {
                Ok(()) => pruned += 1,
                Err(error) => {
                    warn!(%split, %error, "could not delete an older commit marker")
                }
            }
        }
    }
    pruned
}

/// Lets the connector move its positions forward to `last + 1` of each split's latest
/// committed range where they are behind (a commit marker whose acknowledgement was
/// lost). Failures are only logged: the pipeline skips records a commit marker covers,
/// so a position left behind costs a re-read, never a duplicate.
async fn heal(
    spec: &JobSpec,
    log: &dyn RangeLog,
    latest: &BTreeMap<SplitId, PositionRange>,
) -> BTreeMap<SplitId, i64> {
    if latest.is_empty() {
        return BTreeMap::new();
    }
    match log.heal(latest).await {
        Ok(healed) => {
            if !healed.is_empty() {
                info!(job = %spec.name, positions = ?healed, "moved the source's positions to the committed ranges");
            }
            healed
        }
        Err(error) => {
            warn!(job = %spec.name, %error, "could not move the source's positions to the committed ranges; committed ranges will be skipped as they are read");
            BTreeMap::new()
        }
    }
}
