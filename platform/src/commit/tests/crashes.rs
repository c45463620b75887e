//! Crash-and-recover cases of the commit protocol (continued from `tests.rs`).

use super::*;
use sluice_connectors::Classify as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_names_everything_from_its_ranges() {
    let (objects, offsets) = clean_run().await;
    assert_eq!(offsets, all_offsets());
    let names: Vec<&str> = objects.keys().map(String::as_str).collect();
    let range = "00000000000000000000-00000000000000000029";
    let (first, second) = (splits::owner(0), splits::owner(1));
    let mut expected = vec![
        format!("out/_sluice/dead_letters/{first}-{range}.ndjson"),
        format!("out/_sluice/dead_letters/{second}-{range}.ndjson"),
        format!("out/day=2026-01-01/{first}-{range}.parquet"),
        format!("out/day=2026-01-02/{second}-{range}.parquet"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let rows: usize = objects.values().map(Vec::len).sum();
    assert_eq!(rows, 60, "every record once, as a row or a dead letter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_intent_is_redone_with_the_same_names() {
    let report = crash_recover_finish(Crash::AtWrite {
        suffix: ".parquet",
        n: 1,
    })
    .await;
    assert_eq!(
        report.redone.len(),
        2,
        "both ranges were staged: {report:?}"
    );
    assert_eq!(report.redone[&partition(0)], whole_partition());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_some_uploads_is_redone_and_overwrites() {
    let report = crash_recover_finish(Crash::AtWrite {
        suffix: ".parquet",
        n: 2,
    })
    .await;
    assert_eq!(report.redone.len(), 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_two_commit_markers_redoes_only_the_unfinished_partition() {
    let report = crash_recover_finish(Crash::AtWrite {
        suffix: ".commit.json",
        n: 2,
    })
    .await;
    assert_eq!(report.redone.len(), 1, "{report:?}");
    assert_eq!(report.redone[&partition(1)], whole_partition());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_commit_marker_heals_the_group_offsets() {
    let report = crash_recover_finish(Crash::BeforeOffsetCommit).await;
    assert!(report.redone.is_empty(), "{report:?}");
    assert_eq!(report.healed, all_positions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_offset_commit_needs_nothing() {
    let report = crash_recover_finish(Crash::AfterOffsetCommit).await;
    assert!(report.redone.is_empty(), "{report:?}");
    assert!(report.healed.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refuses_to_start_over_an_unfinished_range() {
    let world = World::new();
    let crash = Crash::AtWrite {
        suffix: ".parquet",
        n: 1,
    };
    assert!(matches!(
        world.run(Some(crash)).await.unwrap(),
        Outcome::Died
    ));
    let Err(error) = world.run(None).await else {
        panic!("a run started over an unfinished range");
    };
    assert!(error.to_string().contains("run recovery"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_below_a_commit_marker_are_skipped_when_redelivered() {
    let (clean, _) = clean_run().await;
    let world = World::new();
    assert!(matches!(
        world.run(Some(Crash::BeforeOffsetCommit)).await.unwrap(),
        Outcome::Died
    ));
    assert!(world.log.committed().is_empty());
    // No recovery: the member is handed every record again.
    let Outcome::Finished(stats) = world.run(None).await.unwrap() else {
        panic!("died");
    };
    assert_eq!(stats.skipped_committed, 60);
    assert_eq!(stats.records_in, 0);
    assert_eq!(world.objects().await, clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_an_interrupted_attempt_wrote_and_the_redo_did_not_are_deleted() {
    let (clean, _) = clean_run().await;
    let world = World::new();
    assert!(matches!(
        world
            .run(Some(Crash::AtWrite {
                suffix: ".commit.json",
                n: 1
            }))
            .await
            .unwrap(),
        Outcome::Died
    ));
    // As if the interrupted attempt (a function that is not deterministic) had written
    // one more object for partition 0's range and listed it in its intent.
    let markers = MarkerStore::new(world.output());
    let range = whole_partition();
    let mut intent = markers
        .get(&partition(0), range, names::MarkerKind::Intent)
        .await
        .unwrap()
        .unwrap();
    let stray = "out/day=2026-01-09/t-0-00000000000000000000-00000000000000000029.parquet";
    intent.objects.push(stray.into());
    let intent_path = Path::from(format!(
        "out/{}",
        names::split_marker_name(&partition(0), range, names::MarkerKind::Intent).unwrap()
    ));
    let stray_path = Path::from(stray);
    let body = serde_json::to_vec(&intent).unwrap();
    world
        .store
        .inner()
        .put(&intent_path, body.into())
        .await
        .unwrap();
    world
        .store
        .inner()
        .put(&stray_path, Bytes::from_static(b"stray").into())
        .await
        .unwrap();

    let report = world.recover().await;
    assert_eq!(report.redone.len(), 2);
    assert!(
        world.store.inner().head(&stray_path).await.is_err(),
        "stray kept"
    );
    assert_eq!(world.objects().await, clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_redo_is_recovered_again() {
    let (clean, _) = clean_run().await;
    let world = World::new();
    let at_upload = Crash::AtWrite {
        suffix: ".parquet",
        n: 1,
    };
    assert!(matches!(
        world.run(Some(at_upload)).await.unwrap(),
        Outcome::Died
    ));
    // The redo dies at its own commit marker.
    *world.store.faults().crash.lock().unwrap() = Some((".commit.json", 1));
    let redo = recover(
        &world.spec,
        &*world.log,
        world.output(),
        world.dead_letters(),
    );
    tokio::select! {
        _ = redo => panic!("the redo was expected to die"),
        () = world.store.faults().died.notified() => {}
    }
    let report = world.recover().await;
    assert!(!report.redone.is_empty());
    let Outcome::Finished(_) = world.run(None).await.unwrap() else {
        panic!("died");
    };
    assert_eq!(world.objects().await, clean);
    assert_eq!(world.log.committed(), all_offsets());
}

#[tokio::test]
async fn markers_are_create_only_and_conflicts_are_refused() {
    let world = World::new();
    let markers = MarkerStore::new(world.output());
    let mut manifest =
        RangeManifest::for_split(&partition(0), PositionRange { first: 0, last: 9 }).unwrap();
    manifest.objects = vec!["out/a.parquet".into()];
    markers
        .put(names::MarkerKind::Intent, &manifest)
        .await
        .unwrap();
    // The same content again is our own retry: fine.
    markers
        .put(names::MarkerKind::Intent, &manifest)
        .await
        .unwrap();
    let mut other = manifest.clone();
    other.objects.push("out/b.parquet".into());
    let error = markers
        .put(names::MarkerKind::Intent, &other)
        .await
        .unwrap_err();
    assert!(matches!(error, CommitError::Conflict { .. }), "{error}");
    assert!(!error.is_transient());
    let found = markers.list(&world.log.range_folder()).await.unwrap();
    assert_eq!(
        found[&partition(0)].unfinished(),
        Some(PositionRange { first: 0, last: 9 })
    );
}
