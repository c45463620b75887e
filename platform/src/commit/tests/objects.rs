//! Object versions in the commit protocol: names from the object's identity and the line
//! range, markers under `_sluice/objects/`, committed lines recognised after a restart,
//! an unfinished object range refused until recovery; and (`redo`) a bucket job over a
//! `file://` inbox killed between an object range's intent and its commit marker, then
//! recovered: the range is written again with the intent's boundaries and names.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use sluice_connectors::bucket::range::ObjectRangeLog;
use sluice_connectors::bucket::{InputCompression, InputFormat};
use sluice_connectors::{CheckpointDelta, Event, Origin, PositionRange, RangeLog, SplitId};

use super::super::names::{object_id, range_stem};
use super::super::{CommitError, Committer};
use crate::output::store::OutputLocation;

const BUCKET: &str = "s3://landing/in";
const KEY: &str = "día 1 + más.ndjson";

fn location(store: &Arc<InMemory>, prefix: &str) -> OutputLocation {
    OutputLocation {
        store: store.clone(),
        prefix: Path::from(prefix),
        url: format!("memory://{prefix}"),
    }
}

/// A bucket trigger's range log: what the committer lists object markers by. These tests
/// never read input through it.
fn object_versions() -> Box<dyn RangeLog> {
    Box::new(ObjectRangeLog {
        store: Arc::new(InMemory::new()),
        prefix: Path::default(),
        keys_below_prefix: true,
        format: InputFormat::Auto,
        compression: InputCompression::Auto,
    })
}

fn line(n: u64) -> Event {
    Event::from_payload(
        "{}",
        Origin::Object {
            bucket: Arc::from(BUCKET),
            key: Arc::from(KEY),
            etag: Some(Arc::from("e1")),
            line: n,
        },
    )
}

fn pending(first: i64, last: i64) -> CheckpointDelta {
    let mut delta = CheckpointDelta::new();
    delta.record(&split(), first).unwrap();
    delta.record(&split(), last).unwrap();
    delta
}

fn split() -> SplitId {
    line(1).origin.split()
}

async fn markers(store: &Arc<InMemory>) -> Vec<String> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStore as _;
    let mut found: Vec<String> = store
        .list(Some(&Path::from("out/_sluice")))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    found.sort();
    found
}

#[tokio::test]
async fn object_ranges_are_named_from_the_version_and_committed_lines_are_recognised() {
    let store = Arc::new(InMemory::new());
    let (output, dead) = (location(&store, "out"), location(&store, "dead"));
    let mut committer = Committer::load(output.clone(), dead.clone(), Some(&*object_versions()))
        .await
        .unwrap();
    let ranges = committer.ranges(&pending(1, 100));
    let range = PositionRange {
        first: 1,
        last: 100,
    };
    assert_eq!(ranges, BTreeMap::from([(split(), range)]));
    let id = object_id(BUCKET, KEY, "e1");
    let stem = range_stem(&split(), range).unwrap();
    assert_eq!(stem, format!("object-{id}-{:020}-{:020}", 1, 100));
    let objects = BTreeMap::from([(split(), vec![format!("out/{stem}.parquet")])]);
    let staged = committer
        .stage(&ranges, &objects, &BTreeMap::new())
        .await
        .unwrap();
    let intent = format!("out/_sluice/objects/{id}/{:020}-{:020}.intent.json", 1, 100);
    assert_eq!(markers(&store).await, std::slice::from_ref(&intent));
    staged.commit(&mut committer).await.unwrap();
    assert_eq!(
        markers(&store).await,
        [intent.replace("intent", "commit"), intent.clone()]
    );
    assert!(committer.already_committed(&line(100), &split()));
    assert!(!committer.already_committed(&line(101), &split()));

    // After a restart: the committed range is known, and an object read again from its
    // first line names only the lines after it.
    let committer = Committer::load(output.clone(), dead.clone(), Some(&*object_versions()))
        .await
        .unwrap();
    assert!(committer.already_committed(&line(1), &split()));
    assert!(!committer.already_committed(&line(101), &split()));
    assert_eq!(
        committer.ranges(&pending(1, 150)),
        BTreeMap::from([(
            split(),
            PositionRange {
                first: 101,
                last: 150
            }
        )])
    );
    assert!(
        committer.ranges(&pending(1, 100)).is_empty(),
        "only skipped lines: nothing to name"
    );
    // Another version of the same key is another object.
    let other = SplitId::object(BUCKET, KEY, "e2");
    let mut delta = CheckpointDelta::new();
    delta.record(&other, 1).unwrap();
    assert_eq!(
        committer.ranges(&delta),
        BTreeMap::from([(other, PositionRange { first: 1, last: 1 })])
    );
}

#[tokio::test]
async fn an_unfinished_object_range_must_be_recovered_first() {
    let store = Arc::new(InMemory::new());
    let (output, dead) = (location(&store, "out"), location(&store, "dead"));
    let committer = Committer::load(output.clone(), dead.clone(), Some(&*object_versions()))
        .await
        .unwrap();
    let ranges = committer.ranges(&pending(1, 40));
    // The intent is durable, then the platform dies before the commit marker.
    let _staged = committer
        .stage(&ranges, &BTreeMap::new(), &BTreeMap::new())
        .await
        .unwrap();
    let error = Committer::load(output, dead, Some(&*object_versions()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CommitError::Unfinished { first: 1, last: 40, split, .. } if split.contains(KEY)),
        "{error}"
    );
}

/// A bucket job over a `file://` inbox holding one object of [`LINES`] lines (line `n` is
/// record `n`; [`super::FUNCTION`] sends those ending in 3 or 4 to the dead letters), with
/// its output, markers and cursor in a [`super::CrashStore`].
mod redo {
    use std::time::Duration;

    use async_trait::async_trait;
    use object_store::ObjectStoreExt as _;
    use sluice_connectors::bucket::source::object_location;
    use sluice_connectors::bucket::{BucketSource, Discovery};
    use sluice_connectors::{Source, SourceError};
    use tokio_util::sync::CancellationToken;

    use super::super::{CrashStore, FUNCTION, Outcome, crash_store, stored_objects};
    use super::*;
    use crate::commit::names::MarkerKind;
    use crate::commit::{MarkerStore, RangeManifest, RecoveryReport, recover};
    use crate::deadletter::dead_letter_location;
    use crate::output::store::open_store;
    use crate::pipeline::{Job, JobError};
    use crate::spec::{JobSpec, parse_job};
    use sluice_connectors::bucket::BucketTriggerConfig;
    use sluice_connectors::trigger::ConnectContext;

    const LINES: i64 = 30;
    /// Lines the interrupted run reads before its (only) commit: the object's first range.
    const FIRST_RANGE: PositionRange = PositionRange { first: 1, last: 12 };
    const OBJECT_KEY: &str = "día 1 + más.ndjson";

    struct BucketWorld {
        _dir: tempfile::TempDir,
        spec: JobSpec,
        store: Arc<CrashStore>,
    }

    /// The bucket source, ending after its first `left` lines: the run commits there, so
    /// the object's first range has known boundaries.
    struct FirstLines {
        inner: BucketSource,
        left: usize,
    }

    #[async_trait]
    impl Source for FirstLines {
        async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
            if self.left == 0 {
                return Ok(None);
            }
            let Some(mut events) = self.inner.next_events().await? else {
                return Ok(None);
            };
            events.truncate(self.left);
            self.left -= events.len();
            Ok(Some(events))
        }

        async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
            self.inner.ack(delta).await
        }
    }

    impl BucketWorld {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let inbox = dir.path().join("inbox");
            std::fs::create_dir_all(&inbox).unwrap();
            let body: String = (1..=LINES)
                .map(|id| format!("{{\"id\":{id},\"day\":\"2026-01-01\"}}\n"))
                .collect();
            std::fs::write(inbox.join(OBJECT_KEY), body).unwrap();
            std::fs::write(dir.path().join("fn.sh"), FUNCTION).unwrap();
            let input = url::Url::from_directory_path(&inbox).unwrap();
            let text = format!(
                r#"name = "object-redo-test"
[trigger.bucket]
url = "{input}"
[function]
command = ["sh", "fn.sh"]
[batch]
max_records = 5
[output]
url = "memory://out"
schema = {{ id = "int64 not null", day = "date32" }}
"#
            );
            let spec =
                parse_job(&text, &dir.path().join("job.toml"), dir.path(), &|_| None).unwrap();
            Self {
                _dir: dir,
                spec,
                store: crash_store(),
            }
        }

        fn bucket(&self) -> &BucketTriggerConfig {
            self.spec
                .trigger
                .config::<BucketTriggerConfig>()
                .expect("a bucket trigger")
        }

        fn input(&self) -> OutputLocation {
            let bucket = self.bucket();
            open_store(&bucket.url, &bucket.options).unwrap()
        }

        fn range_log(&self) -> ObjectRangeLog {
            self.bucket().object_range_log(&self.input())
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

        /// The source `sluice run` builds for the job (the connector's configuration),
        /// with its cursor beside the output in the crash store; it ends once the inbox is
        /// read.
        async fn source(&self) -> BucketSource {
            let context = ConnectContext {
                job: self.spec.name.clone(),
                input: None,
                output: self.output(),
                stop_when_idle: true,
            };
            let mut config = self.bucket().source_config(self.input(), &context).unwrap();
            config.discovery = Discovery::Listing {
                poll_interval: Duration::from_millis(20),
            };
            BucketSource::connect(config).await.unwrap()
        }

        /// Runs the job until the source ends (after `lines`, if given) or the run dies
        /// at the `n`th write of an object whose name ends with `suffix`.
        async fn run(
            &self,
            lines: Option<usize>,
            crash: Option<(&'static str, usize)>,
        ) -> Result<Outcome, JobError> {
            *self.store.faults().crash.lock().unwrap() = crash;
            let log = self.range_log();
            let committer = Committer::load(self.output(), self.dead_letters(), Some(&log)).await?;
            let source: Box<dyn Source> = match lines {
                Some(left) => Box::new(FirstLines {
                    inner: self.source().await,
                    left,
                }),
                None => Box::new(self.source().await),
            };
            let run = Job::from_parts(
                &self.spec,
                self.output(),
                self.dead_letters(),
                committer,
                source,
            )
            .run(CancellationToken::new());
            tokio::select! {
                result = run => result.map(Outcome::Finished),
                () = self.store.faults().died.notified() => Ok(Outcome::Died),
            }
        }

        async fn recover(&self) -> RecoveryReport {
            recover(
                &self.spec,
                &self.range_log(),
                self.output(),
                self.dead_letters(),
            )
            .await
            .unwrap()
        }

        /// The input object's version, as its splits and markers name it.
        async fn split(&self) -> SplitId {
            let input = open_store(&self.bucket().url, &BTreeMap::new()).unwrap();
            let meta = input
                .store
                .head(&object_location(OBJECT_KEY))
                .await
                .unwrap();
            SplitId::object(
                &input.url,
                OBJECT_KEY,
                meta.e_tag.as_deref().unwrap_or_default(),
            )
        }

        /// Output and dead letters, without markers and the cursor.
        async fn objects(&self) -> BTreeMap<String, Vec<String>> {
            stored_objects(
                self.store.inner(),
                &["out/_sluice/objects/", "out/_sluice/bucket/"],
            )
            .await
        }

        async fn intent(&self, range: PositionRange) -> RangeManifest {
            MarkerStore::new(self.output())
                .get(&self.split().await, range, MarkerKind::Intent)
                .await
                .unwrap()
                .expect("an intent marker")
        }
    }

    /// The record ids of the objects (Parquet rows and dead letters), sorted.
    fn ids(objects: &BTreeMap<String, Vec<String>>) -> Vec<i64> {
        let mut ids: Vec<i64> = objects
            .values()
            .flatten()
            .map(|row| match row.parse() {
                Ok(id) => id,
                Err(_) => {
                    let letter: serde_json::Value = serde_json::from_str(row).unwrap();
                    letter["id"].as_i64().unwrap()
                }
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Dies at `crash` while committing the object's first range, checks what the
    /// interrupted attempt left, recovers, then finishes the object with a normal run.
    async fn crash_redo_finish(crash: (&'static str, usize), uploaded: bool) {
        let world = BucketWorld::new();
        let first_lines = usize::try_from(FIRST_RANGE.last).unwrap();
        assert!(
            matches!(
                world.run(Some(first_lines), Some(crash)).await.unwrap(),
                Outcome::Died
            ),
            "{crash:?} was never reached"
        );
        let split = world.split().await;
        let stem = range_stem(&split, FIRST_RANGE).unwrap();
        assert!(stem.starts_with("object-"), "{stem}");
        let parquet = format!("out/{stem}.parquet");
        let letters = format!("out/_sluice/dead_letters/{stem}.ndjson");
        let intent = world.intent(FIRST_RANGE).await;
        assert_eq!(intent.objects, vec![parquet.clone()]);
        assert_eq!(intent.dead_letters, vec![letters.clone()]);
        let left: Vec<String> = world.objects().await.into_keys().collect();
        if uploaded {
            assert_eq!(left, [letters.clone(), parquet.clone()]);
        } else {
            assert!(left.is_empty(), "{left:?}");
        }
        // Without recovery, nothing runs beside the unfinished range.
        let Err(error) = world.run(None, None).await else {
            panic!("a run started over an unfinished object range");
        };
        assert!(
            matches!(
                &error,
                JobError::Commit(CommitError::Unfinished {
                    first: 1,
                    last: 12,
                    ..
                })
            ),
            "{error}"
        );

        let report = world.recover().await;
        assert_eq!(
            report.redone,
            BTreeMap::from([(split.clone(), FIRST_RANGE)])
        );
        let redone = world.objects().await;
        assert_eq!(
            redone.keys().cloned().collect::<Vec<_>>(),
            [letters.clone(), parquet.clone()],
            "the redo writes the intent's names and nothing else"
        );
        assert_eq!(ids(&redone), (1..=FIRST_RANGE.last).collect::<Vec<_>>());
        assert_eq!(redone[&letters].len(), 2, "lines 3 and 4");
        let found = MarkerStore::new(world.output())
            .list(sluice_connectors::range_log::OBJECT_RANGES)
            .await
            .unwrap();
        assert_eq!(found[&split].unfinished(), None);
        assert_eq!(found[&split].latest_commit(), Some(FIRST_RANGE));

        // A normal run reads the object again, skips the committed lines and writes the
        // rest as the next range.
        let Outcome::Finished(stats) = world.run(None, None).await.unwrap() else {
            panic!("the run after recovery died");
        };
        assert_eq!(stats.skipped_committed, 12);
        assert_eq!(stats.records_in, 18);
        let rest = PositionRange {
            first: FIRST_RANGE.last + 1,
            last: LINES,
        };
        let rest_stem = range_stem(&split, rest).unwrap();
        let done = world.objects().await;
        assert_eq!(
            done.keys().cloned().collect::<Vec<_>>(),
            [
                letters,
                format!("out/_sluice/dead_letters/{rest_stem}.ndjson"),
                parquet,
                format!("out/{rest_stem}.parquet"),
            ]
        );
        assert_eq!(
            ids(&done),
            (1..=LINES).collect::<Vec<_>>(),
            "every line once"
        );
        let found = MarkerStore::new(world.output())
            .list(sluice_connectors::range_log::OBJECT_RANGES)
            .await
            .unwrap();
        assert_eq!(found[&split].unfinished(), None);
        assert_eq!(found[&split].latest_commit(), Some(rest));
        // The object is done in the cursor: a further run reads nothing.
        let Outcome::Finished(stats) = world.run(None, None).await.unwrap() else {
            panic!("died");
        };
        assert_eq!((stats.records_in, stats.skipped_committed), (0, 0));
        assert_eq!(world.objects().await, done);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_range_interrupted_after_its_intent_is_redone_with_the_same_names() {
        // The first write after the intent is the range's Parquet object.
        crash_redo_finish((".parquet", 1), false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_range_interrupted_before_its_commit_marker_is_redone_and_overwritten() {
        crash_redo_finish((".commit.json", 1), true).await;
    }
}
