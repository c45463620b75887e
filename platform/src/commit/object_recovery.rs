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
use crate::output::store::{OutputLocation, open_store};
use crate::pipeline::Job;
use crate::spec::{BucketDiscovery, BucketTriggerSpec, JobSpec};

/// Finishes every unfinished object range of the job's output; see the module docs.
pub(super) async fn recover_objects(
    spec: &JobSpec,
    bucket: &BucketTriggerSpec,
    output: OutputLocation,
    dead_letters: OutputLocation,
) -> Result<RecoveryReport, RecoveryError> {
    let markers = MarkerStore::new(output.clone());
    let input = open_store(&bucket.url, &bucket.options)?;
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
            let location = match &bucket.discovery {
                // Listing keys are relative to the input prefix; notified keys are the
                // bucket's own.
                BucketDiscovery::Listing => object_location(&if input.prefix.as_ref().is_empty() {
                    object.key.clone()
                } else {
                    format!("{}/{}", input.prefix, object.key)
                }),
                BucketDiscovery::Notifications { .. } => object_location(&object.key),
            };
            let request = ObjectRangeRequest {
                store: input.store.clone(),
                location,
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                etag: object.etag.clone(),
                format: bucket.format,
                compression: bucket.compression,
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
