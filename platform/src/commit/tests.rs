//! The commit protocol under crashes, over in-memory doubles: a store that "dies" (hangs
//! forever, after telling the test) at a chosen write, a replayable log double over a
//! `Vec` of records per (neutral) split with stored positions, like a consumer group's
//! offsets, and real function subprocesses. A crash is the pipeline's future being
//! dropped mid-flight — what `kill -9` leaves, since everything not in the store or the
//! log's stored positions is lost.
//!
//! Each crash case then recovers and runs to the end, and must leave exactly the objects
//! of a clean run (same names, same rows, same dead letters), no unfinished markers, and
//! the stored positions at the end of every split.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_connectors::range_log::OBJECT_RANGES;
use sluice_connectors::testing::splits;
use sluice_connectors::{
    CheckpointDelta, Event, PositionRange, RangeLog, Source, SourceError, SplitId, VecSource,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use sluice_connectors::faulty_store::{Fault, Faults, FaultyStore, Request};

use super::*;
use crate::deadletter::dead_letter_location;
use crate::output::store::OutputLocation;
use crate::pipeline::{Job, JobStats};
use crate::spec::{JobSpec, parse_job};

/// Splits of the double (numbered from 0, like partitions).
const PARTITIONS: i32 = 2;
const PER_PARTITION: i64 = 30;

/// Where a run dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// At the `n`th (1-based) write of an object whose name ends with `suffix`.
    AtWrite { suffix: &'static str, n: usize },
    /// In the offset commit, before the broker stores the offsets.
    BeforeOffsetCommit,
    /// Right after the broker stored the offsets.
    AfterOffsetCommit,
}

/// The faults of an in-memory store shared by every "process" of a test: the chosen
/// write never answers, after telling the test, as if the process died there.
#[derive(Debug, Default)]
struct CrashAt {
    /// The `n`th write of an object whose name ends with the suffix.
    crash: Mutex<Option<(&'static str, usize)>>,
    died: Arc<Notify>,
}

impl Faults for CrashAt {
    fn before(&self, request: Request, location: &Path) -> Fault {
        if request == Request::Delete {
            return Fault::Pass;
        }
        let mut crash = self.crash.lock().unwrap();
        match crash.as_mut() {
            Some((suffix, n)) if location.as_ref().ends_with(*suffix) => {
                *n -= 1;
                if *n > 0 {
                    return Fault::Pass;
                }
                *crash = None;
                self.died.notify_one();
                Fault::Hang
            }
            _ => Fault::Pass,
        }
    }
}

type CrashStore = FaultyStore<CrashAt>;

fn crash_store() -> Arc<CrashStore> {
    Arc::new(FaultyStore::new(
        Arc::new(InMemory::new()),
        CrashAt::default(),
    ))
}

/// The replayable log double: every split's records and the positions stored for them
/// (the next to read), which healing moves forward.
#[derive(Debug)]
struct VecLog {
    records: BTreeMap<i32, Vec<Event>>,
    committed: Mutex<BTreeMap<i32, i64>>,
}

impl VecLog {
    /// `PER_PARTITION` records per partition; record `o` of partition `p` has id
    /// `o * PARTITIONS + p` and falls on one of two days.
    fn new() -> Self {
        let records = (0..PARTITIONS)
            .map(|p| {
                let events = (0..PER_PARTITION)
                    .map(|o| {
                        let id = o * i64::from(PARTITIONS) + i64::from(p);
                        splits::event(
                            p,
                            o,
                            format!(r#"{{"id":{id},"day":"2026-01-0{}"}}"#, 1 + id % 2),
                        )
                    })
                    .collect();
                (p, events)
            })
            .collect();
        Self {
            records,
            committed: Mutex::new(BTreeMap::new()),
        }
    }

    fn committed(&self) -> BTreeMap<i32, i64> {
        self.committed.lock().unwrap().clone()
    }

    /// What a consumer receives: every split from its stored position (or the start),
    /// interleaved.
    fn member_events(&self) -> Vec<Event> {
        let committed = self.committed();
        let mut queues: Vec<_> = self
            .records
            .iter()
            .map(|(p, events)| {
                let from = committed.get(p).copied().unwrap_or(0);
                events
                    .iter()
                    .filter(move |e| e.origin.position() >= from)
                    .cloned()
                    .collect::<std::collections::VecDeque<_>>()
            })
            .collect();
        let mut events = Vec::new();
        while queues.iter().any(|q| !q.is_empty()) {
            for queue in &mut queues {
                events.extend(queue.pop_front());
            }
        }
        events
    }

    fn commit_positions(&self, positions: &BTreeMap<i32, i64>) {
        self.committed.lock().unwrap().extend(positions);
    }
}

/// The double's number of `split`, if it is one of its splits.
fn split_number(split: &SplitId) -> Option<i32> {
    (0..PARTITIONS).find(|p| splits::split(*p) == *split)
}

#[async_trait]
impl RangeLog for VecLog {
    fn range_folder(&self) -> String {
        OBJECT_RANGES.to_owned()
    }

    async fn read_range(
        &self,
        split: &SplitId,
        range: PositionRange,
    ) -> Result<Box<dyn Source>, SourceError> {
        let p = split_number(split).ok_or_else(|| SourceError::Internal {
            connector: "test log",
            message: format!("{split} is not a split of the double"),
        })?;
        let events = self.records[&p]
            .iter()
            .filter(|e| (range.first..=range.last).contains(&e.origin.position()))
            .cloned()
            .collect();
        Ok(Box::new(VecSource::new(events, 4)))
    }

    /// Moves the stored positions that are behind up to `last + 1`.
    async fn heal(
        &self,
        latest: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<BTreeMap<SplitId, i64>, SourceError> {
        let committed = self.committed();
        let behind: BTreeMap<i32, i64> = latest
            .iter()
            .filter_map(|(split, range)| Some((split_number(split)?, range)))
            .filter(|(p, range)| committed.get(p).is_none_or(|&c| c <= range.last))
            .map(|(p, range)| (p, range.last + 1))
            .collect();
        self.commit_positions(&behind);
        Ok(behind
            .into_iter()
            .map(|(p, next)| (splits::split(p), next))
            .collect())
    }
}

/// A consumer over the double: acks store positions in it, and may die there.
struct MemberSource {
    inner: VecSource,
    log: Arc<VecLog>,
    crash: Option<Crash>,
    died: Arc<Notify>,
}

#[async_trait]
impl Source for MemberSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        self.inner.next_events().await
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        if self.crash == Some(Crash::BeforeOffsetCommit) {
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        let positions: BTreeMap<i32, i64> = delta
            .iter()
            .filter_map(|(split, range)| Some((split_number(split)?, range.last + 1)))
            .collect();
        self.log.commit_positions(&positions);
        if self.crash == Some(Crash::AfterOffsetCommit) {
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Rejects records whose id ends in 3 or 4 (so every range has dead letters), passes the
/// rest.
const FUNCTION: &str = r#"i=0; while IFS= read -r line; do
  case "$line" in
    *'3,"day"'*|*'4,"day"'*) echo "{\"\$error\": {\"record\": $i, \"message\": \"ends in 3 or 4\"}}" ;;
    *) printf '%s\n' "$line" ;;
  esac
  i=$((i+1))
done"#;

/// One job's world: its folder, output store and log double, outliving every run.
struct World {
    _dir: tempfile::TempDir,
    spec: JobSpec,
    store: Arc<CrashStore>,
    log: Arc<VecLog>,
}

enum Outcome {
    Finished(JobStats),
    Died,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fn.sh"), FUNCTION).unwrap();
        let bucket = splits::BUCKET;
        let text = format!(
            r#"name = "commit-test"
[trigger.bucket]
url = "{bucket}"
[function]
command = ["sh", "fn.sh"]
[batch]
max_records = 10
[output]
url = "memory://out"
partition_by = ["day"]
schema = {{ id = "int64 not null", day = "date32" }}
"#
        );
        let spec = parse_job(&text, &dir.path().join("job.toml"), dir.path(), &|_| None).unwrap();
        Self {
            _dir: dir,
            spec,
            store: crash_store(),
            log: Arc::new(VecLog::new()),
        }
    }

    fn output(&self) -> OutputLocation {
        OutputLocation {
            store: self.store.clone(),
            prefix: Path::from("out"),
            url: "memory://out".into(),
        }
    }

    fn dead_letters(&self) -> OutputLocation {
        dead_letter_location(&self.spec, &self.output()).unwrap()
    }

    /// Runs the job as `sluice run` would after recovery, until the double runs dry or
    /// the run dies at `crash`.
    async fn run(&self, crash: Option<Crash>) -> Result<Outcome, crate::pipeline::JobError> {
        if let Some(Crash::AtWrite { suffix, n }) = crash {
            *self.store.faults().crash.lock().unwrap() = Some((suffix, n));
        }
        let committer = Committer::load(
            self.output(),
            self.dead_letters(),
            Some(&*self.log as &dyn RangeLog),
        )
        .await?;
        let source = MemberSource {
            inner: VecSource::new(self.log.member_events(), 7),
            log: self.log.clone(),
            crash,
            died: self.store.faults().died.clone(),
        };
        let run = Job::from_parts(
            &self.spec,
            self.output(),
            self.dead_letters(),
            committer,
            Box::new(source),
        )
        .run(CancellationToken::new());
        tokio::select! {
            result = run => result.map(Outcome::Finished),
            () = self.store.faults().died.notified() => Ok(Outcome::Died),
        }
    }

    async fn recover(&self) -> RecoveryReport {
        recover(&self.spec, &*self.log, self.output(), self.dead_letters())
            .await
            .unwrap()
    }

    /// Every object but the markers: see [`stored_objects`].
    async fn objects(&self) -> BTreeMap<String, Vec<String>> {
        stored_objects(self.store.inner(), &[&format!("out/{OBJECT_RANGES}/")]).await
    }

    async fn markers(&self) -> BTreeMap<SplitId, PartitionMarkers> {
        MarkerStore::new(self.output())
            .list(&self.log.range_folder())
            .await
            .unwrap()
    }
}

/// Every object of `store` whose name starts with none of `skip`: Parquet objects as
/// their sorted ids, dead letters as their sorted payloads.
async fn stored_objects(
    store: &Arc<dyn ObjectStore>,
    skip: &[&str],
) -> BTreeMap<String, Vec<String>> {
    let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut objects = BTreeMap::new();
    for meta in listed {
        let name = meta.location.to_string();
        if skip.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let data = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut rows = if name.ends_with(".parquet") {
            parquet_ids(data)
        } else {
            String::from_utf8(data.to_vec())
                .unwrap()
                .lines()
                .map(|l| {
                    let letter: serde_json::Value = serde_json::from_str(l).unwrap();
                    letter["payload"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        rows.sort();
        objects.insert(name, rows);
    }
    objects
}

fn parquet_ids(data: Bytes) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>();
        ids.extend(column.values().iter().map(|id| id.to_string()));
    }
    ids
}

/// The objects and offsets of a run that never crashed.
async fn clean_run() -> (BTreeMap<String, Vec<String>>, BTreeMap<i32, i64>) {
    let world = World::new();
    let Outcome::Finished(stats) = world.run(None).await.unwrap() else {
        panic!("a run without a crash died");
    };
    assert_eq!(
        stats.records_in,
        (PER_PARTITION * i64::from(PARTITIONS)) as u64
    );
    (world.objects().await, world.log.committed())
}

fn all_offsets() -> BTreeMap<i32, i64> {
    (0..PARTITIONS).map(|p| (p, PER_PARTITION)).collect()
}

/// [`all_offsets`] as recovery reports healed positions, by split.
fn all_positions() -> BTreeMap<SplitId, i64> {
    all_offsets()
        .into_iter()
        .map(|(p, next)| (partition(p), next))
        .collect()
}

fn partition(p: i32) -> SplitId {
    splits::split(p)
}

/// Crashes at `crash`, recovers, runs to the end; returns the recovery report.
async fn crash_recover_finish(crash: Crash) -> RecoveryReport {
    let (clean, clean_offsets) = clean_run().await;
    assert_eq!(clean_offsets, all_offsets());
    let world = World::new();
    assert!(
        matches!(world.run(Some(crash)).await.unwrap(), Outcome::Died),
        "{crash:?} was never reached"
    );
    let report = world.recover().await;
    let Outcome::Finished(_) = world.run(None).await.unwrap() else {
        panic!("the run after recovery died");
    };
    assert_eq!(world.objects().await, clean, "after {crash:?}");
    assert_eq!(world.log.committed(), all_offsets(), "after {crash:?}");
    for (split, markers) in world.markers().await {
        assert_eq!(markers.unfinished(), None, "{split}");
        assert_eq!(
            markers.latest_commit(),
            Some(PositionRange {
                first: 0,
                last: PER_PARTITION - 1
            })
        );
    }
    report
}

fn whole_partition() -> PositionRange {
    PositionRange {
        first: 0,
        last: PER_PARTITION - 1,
    }
}

mod crashes;
mod objects;
