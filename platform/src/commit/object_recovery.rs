//! Recovery of a bucket job's output on start: every object range a crash left
//! unfinished (an intent without a commit marker) is written again with the intent's
//! boundaries — the same lines of the same object version, so the same names — then
//! committed; older markers are deleted. See `design.md`.
//!
//! ```text
//! for object version in markers(_sluice/objects):
//!     if latest intent has no commit marker:
//!         redo: read lines first..=last of that version again → function → schema →
//!               same object names; delete what earlier attempts listed and the redo did
//!               not write; commit marker
//!     delete markers older than the latest committed range
//! ```
//!
//! Unlike Kafka there is nothing to heal afterwards: the bucket source's cursor marks an
//! object done only after its last line is acknowledged, and lines a commit marker
//! covers are skipped (and acknowledged) when the object is read again.

use sluice_connectors::bucket::range::{ObjectRangeRequest, read_object_range};
use sluice_connectors::bucket::source::object_location;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::committer::Committer;
use super::marker::{CommitError, MarkerStore};
use super::recovery::{RecoveryError, RecoveryReport, everything_listed_of, prune_split};
use sluice_connectors::bucket::{InputCompression, InputFormat};

use crate::output::store::OutputLocation;
use crate::pipeline::Job;
use crate::spec::JobSpec;

/// Where a bucket job's input objects are, and how to read their lines again.
#[derive(Debug, Clone)]
pub struct ObjectInput {
    /// The input URL's store and prefix.
    pub store: OutputLocation,
    /// True when markers name keys relative to the input prefix (listing), false when
    /// they name the bucket's own keys (notifications).
    pub keys_below_prefix: bool,
    pub format: InputFormat,
    pub compression: InputCompression,
}

/// Finishes every unfinished object range of the job's output; see the module docs.
pub async fn recover_objects(
    spec: &JobSpec,
    input: &ObjectInput,
    output: OutputLocation,
    dead_letters: OutputLocation,
) -> Result<RecoveryReport, RecoveryError> {
    let markers = MarkerStore::new(output.clone());
    let mut report = RecoveryReport::default();
    for (split, found) in markers.list_objects().await? {
        let mut keep = found.latest_commit();
        if let Some(range) = found.unfinished() {
            let earlier = everything_listed_of(&markers, &split, range).await?;
            let Some(object) = earlier.object.clone() else {
                return Err(CommitError::Corrupt {
                    path: split.to_string(),
                    message: "an object marker names no object".into(),
                }
                .into());
            };
            info!(job = %spec.name, object = %object.key, etag = %object.etag, first = range.first, last = range.last, objects = earlier.objects.len(), "found an unfinished object range; writing it again");
            // Listing keys are relative to the input prefix; notified keys are the
            // bucket's own.
            let prefix = input.store.prefix.as_ref();
            let location = if input.keys_below_prefix && !prefix.is_empty() {
                object_location(&format!("{prefix}/{}", object.key))
            } else {
                object_location(&object.key)
            };
            let request = ObjectRangeRequest {
                store: input.store.store.clone(),
                location,
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                etag: object.etag.clone(),
                format: input.format,
                compression: input.compression,
            };
            let read_error = |source| RecoveryError::ReadObject {
                object: object.key.clone(),
                first: range.first,
                last: range.last,
                source,
            };
            let source = read_object_range(request, range)
                .await
                .map_err(read_error)?;
            let committer = Committer::for_redo(
                markers.clone(),
                dead_letters.clone(),
                found.latest_commit(),
                earlier,
            );
            Job::from_parts(
                spec,
                output.clone(),
                dead_letters.clone(),
                committer,
                Box::new(source),
            )
            .run(CancellationToken::new())
            .await
            .map_err(|source| RecoveryError::RedoObject {
                object: object.key.clone(),
                first: range.first,
                last: range.last,
                source: Box::new(source),
            })?;
            report.redone_objects.insert(object.key.clone(), range);
            keep = Some(range);
        }
        if let Some(keep) = keep {
            report.pruned += prune_split(&markers, &split, &found, keep).await;
        }
    }
    if !report.redone_objects.is_empty() || report.pruned > 0 {
        info!(job = %spec.name, redone = report.redone_objects.len(), pruned = report.pruned, "object recovery done");
    }
    Ok(report)
}
