//! Recovery on start: finishes every range a crash left unfinished, then makes the
//! group's committed offsets reach every committed range. Runs before the job's source
//! joins its consumer group. See `design.md` for why each step is safe to repeat.
//!
//! ```text
//! for partition in markers(topic):
//!     if latest intent has no commit marker:
//!         redo: read offsets first..=last again → function → schema → same object names;
//!               delete objects earlier attempts listed that the redo did not write;
//!               commit marker
//!     delete markers older than the latest committed range
//! group offsets := max(committed, latest committed last + 1) for every partition
//! ```

use std::collections::BTreeMap;

use sluice_connectors::kafka::PartitionLog;
use sluice_connectors::{PositionRange, SourceError, SplitId};
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
    #[error("recovery: reading partition {partition} offsets {first}..={last} again: {source}")]
    Read {
        partition: i32,
        first: i64,
        last: i64,
        #[source]
        source: SourceError,
    },
    #[error("recovery: reading lines {first}..={last} of object {object} again: {source}")]
    ReadObject {
        object: String,
        first: i64,
        last: i64,
        #[source]
        source: SourceError,
    },
    #[error("recovery: writing lines {first}..={last} of object {object} again: {source}")]
    RedoObject {
        object: String,
        first: i64,
        last: i64,
        #[source]
        source: Box<JobError>,
    },
    #[error("recovery: writing partition {partition} offsets {first}..={last} again: {source}")]
    Redo {
        partition: i32,
        first: i64,
        last: i64,
        #[source]
        source: Box<JobError>,
    },
}

/// What recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unfinished ranges written again and committed, by partition.
    pub redone: BTreeMap<i32, PositionRange>,
    /// Unfinished object ranges written again and committed, by object key.
    pub redone_objects: BTreeMap<String, PositionRange>,
    /// Group offsets moved forward to the committed ranges (partition → next offset).
    pub healed: BTreeMap<i32, i64>,
    /// Older markers deleted.
    pub pruned: usize,
}

/// Recovers the output of a job that reads `topic` before it consumes: see the module
/// docs. `log` reads the topic's partitions again and moves the group's offsets.
pub async fn recover_partitions(
    spec: &JobSpec,
    topic: &str,
    output: OutputLocation,
    dead_letters: OutputLocation,
    log: &dyn PartitionLog,
) -> Result<RecoveryReport, RecoveryError> {
    let markers = MarkerStore::new(output.clone());
    let mut report = RecoveryReport::default();
    let mut latest: BTreeMap<i32, PositionRange> = BTreeMap::new();
    for (partition, found) in markers.list(topic).await? {
        if let Some(range) = found.unfinished() {
            let earlier = everything_listed(&markers, topic, partition, range).await?;
            info!(job = %spec.name, topic, partition, first = range.first, last = range.last, objects = earlier.objects.len(), "found an unfinished range; writing it again");
            let committer = Committer::for_redo(
                markers.clone(),
                dead_letters.clone(),
                found.latest_commit(),
                earlier,
            );
            let source =
                log.read_range(partition, range)
                    .await
                    .map_err(|source| RecoveryError::Read {
                        partition,
                        first: range.first,
                        last: range.last,
                        source,
                    })?;
            let shutdown = CancellationToken::new();
            Job::from_parts(
                spec,
                output.clone(),
                dead_letters.clone(),
                committer,
                source,
            )
            .run(shutdown)
            .await
            .map_err(|source| RecoveryError::Redo {
                partition,
                first: range.first,
                last: range.last,
                source: Box::new(source),
            })?;
            report.redone.insert(partition, range);
            latest.insert(partition, range);
        } else if let Some(range) = found.latest_commit() {
            latest.insert(partition, range);
        }
        if let Some(keep) = latest.get(&partition) {
            report.pruned += prune_older(&markers, topic, partition, &found, *keep).await;
        }
    }
    report.healed = heal_offsets(spec, log, &latest).await;
    info!(job = %spec.name, topic, redone = report.redone.len(), healed = report.healed.len(), pruned = report.pruned, "recovery done");
    Ok(report)
}

/// The intent's objects plus any a redo marker of the same range lists.
async fn everything_listed(
    markers: &MarkerStore,
    topic: &str,
    partition: i32,
    range: PositionRange,
) -> Result<RangeManifest, CommitError> {
    let split = SplitId::kafka(topic, partition);
    everything_listed_of(markers, &split, range).await
}

/// [`everything_listed`] for any split.
pub(super) async fn everything_listed_of(
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

/// Deletes every marker of `partition` except those of `keep`; returns how many.
/// Failures are only logged: the next prune deletes what is left.
async fn prune_older(
    markers: &MarkerStore,
    topic: &str,
    partition: i32,
    found: &PartitionMarkers,
    keep: PositionRange,
) -> usize {
    prune_split(markers, &SplitId::kafka(topic, partition), found, keep).await
}

/// Deletes every marker of `split` except those of `keep`; returns how many.
pub(super) async fn prune_split(
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

/// Moves the group's committed offsets forward to `last + 1` of each partition's latest
/// committed range where they are behind (a commit marker whose offset commit was lost).
/// Failures are only logged: the pipeline skips records a commit marker covers, so a
/// group offset left behind costs a re-read, never a duplicate.
async fn heal_offsets(
    spec: &JobSpec,
    log: &dyn PartitionLog,
    latest: &BTreeMap<i32, PositionRange>,
) -> BTreeMap<i32, i64> {
    if latest.is_empty() {
        return BTreeMap::new();
    }
    let partitions: Vec<i32> = latest.keys().copied().collect();
    let committed = match log.committed_offsets(&partitions).await {
        Ok(committed) => committed,
        Err(error) => {
            warn!(job = %spec.name, %error, "could not read the group's committed offsets; committed ranges will be skipped as they are read");
            return BTreeMap::new();
        }
    };
    let behind: BTreeMap<i32, i64> = latest
        .iter()
        .filter(|(p, range)| committed.get(p).is_none_or(|&c| c <= range.last))
        .map(|(&p, range)| (p, range.last + 1))
        .collect();
    if behind.is_empty() {
        return behind;
    }
    match log.commit_offsets(&behind).await {
        Ok(()) => {
            info!(job = %spec.name, offsets = ?behind, "moved the group's offsets to the committed ranges");
            behind
        }
        Err(error) => {
            warn!(job = %spec.name, %error, "could not commit the group's offsets; committed ranges will be skipped as they are read");
            BTreeMap::new()
        }
    }
}
