//! The same cases on SQLite (a file in a temporary folder) and on PostgreSQL (a throwaway
//! database on `SLUICE_TEST_POSTGRES_URL`, default `postgres://root@127.0.0.1:5432/postgres`,
//! with the `postgres-tests` feature).

use super::*;

/// A registry on a fresh database; dropping it removes the database.
struct Fresh {
    registry: Registry,
    url: String,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("registry.db").display());
        Self {
            registry: Registry::open(&url).await.unwrap(),
            url,
            cleanup: None,
            _dir: Some(dir),
        }
    }

    #[cfg(feature = "postgres-tests")]
    async fn postgres() -> Self {
        let admin_url = std::env::var("SLUICE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned());
        sqlx::any::install_default_drivers();
        let admin = AnyPool::connect(&admin_url).await.unwrap();
        let database = format!(
            "sluice_registry_{}_{}",
            std::process::id(),
            now_ms() % 1_000_000_000
        ) + &format!("_{}", rand_suffix());
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{database}");
        Self {
            registry: Registry::open(&url).await.unwrap(),
            url,
            cleanup: Some((admin_url, database)),
            _dir: None,
        }
    }

    async fn drop_database(self) {
        self.registry.close().await;
        if let Some((admin_url, database)) = self.cleanup {
            let admin = AnyPool::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }
}

#[cfg(feature = "postgres-tests")]
fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn versions_are_numbered_and_content_addressed(fresh: &Fresh) {
    let registry = &fresh.registry;
    assert!(registry.jobs().await.unwrap().is_empty());
    let first = registry.deploy("clicks", "aaa", "alice").await.unwrap();
    assert_eq!(
        first,
        Deployed {
            version: 1,
            new_version: true,
            changed: true
        }
    );
    let again = registry.deploy("clicks", "aaa", "bob").await.unwrap();
    assert_eq!(
        again,
        Deployed {
            version: 1,
            new_version: false,
            changed: false
        }
    );
    let second = registry.deploy("clicks", "bbb", "bob").await.unwrap();
    assert_eq!((second.version, second.new_version), (2, true));
    let versions = registry.versions("clicks").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].deployed_by, "alice");
    assert_eq!(versions[1].sha256, "bbb");
    // Old content again: its number, made current.
    let back = registry.deploy("clicks", "aaa", "carol").await.unwrap();
    assert_eq!(
        (back.version, back.new_version, back.changed),
        (1, false, true)
    );
    assert_eq!(registry.job("clicks").await.unwrap().unwrap().version, 1);
    // Another job numbers its own versions.
    assert_eq!(
        registry
            .deploy("orders", "aaa", "alice")
            .await
            .unwrap()
            .version,
        1
    );
    let names: Vec<String> = registry
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.name)
        .collect();
    assert_eq!(names, ["clicks", "orders"]);
}

async fn state_rollback_and_delete(fresh: &Fresh) {
    let registry = &fresh.registry;
    registry.deploy("clicks", "aaa", "alice").await.unwrap();
    registry.deploy("clicks", "bbb", "alice").await.unwrap();
    assert!(
        registry
            .set_state("clicks", DesiredState::Failed, Some("broker unreachable"))
            .await
            .unwrap()
    );
    let job = registry.job("clicks").await.unwrap().unwrap();
    assert_eq!(job.state, DesiredState::Failed);
    assert_eq!(job.reason.as_deref(), Some("broker unreachable"));
    registry
        .set_state("clicks", DesiredState::Paused, None)
        .await
        .unwrap();
    let rolled = registry.set_version("clicks", 1).await.unwrap().unwrap();
    assert_eq!((rolled.version, rolled.state), (1, DesiredState::Running));
    assert_eq!(registry.set_version("clicks", 7).await.unwrap(), None);
    assert!(
        !registry
            .set_state("nope", DesiredState::Paused, None)
            .await
            .unwrap()
    );
    assert!(registry.delete("clicks").await.unwrap());
    assert!(!registry.delete("clicks").await.unwrap());
    assert_eq!(registry.job("clicks").await.unwrap(), None);
    // Numbers are never reused after a delete.
    assert_eq!(
        registry
            .deploy("clicks", "ccc", "alice")
            .await
            .unwrap()
            .version,
        3
    );
}

async fn state_survives_reopening(fresh: &Fresh) {
    fresh
        .registry
        .deploy("clicks", "aaa", "alice")
        .await
        .unwrap();
    fresh
        .registry
        .set_state("clicks", DesiredState::Paused, None)
        .await
        .unwrap();
    let reopened = Registry::open(&fresh.url).await.unwrap();
    let job = reopened.job("clicks").await.unwrap().unwrap();
    assert_eq!((job.version, job.state), (1, DesiredState::Paused));
    assert_eq!(reopened.schema_version().await.unwrap(), latest_version());
    reopened.close().await;
}

async fn a_newer_database_is_refused(fresh: &Fresh) {
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, $1, 0)",
    )
    .bind(vec![0_u8; 48])
    .execute(&fresh.registry.pool)
    .await
    .unwrap();
    let error = Registry::open(&fresh.url).await.unwrap_err();
    assert!(
        matches!(error, RegistryError::NewerSchema { found: 999, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("upgrade sluice"), "{error}");
}

/// A job's uid is recorded once, is never another job's, and stays across reopening
/// and redeploys.
async fn a_jobs_function_uid_is_recorded_once_and_unique(fresh: &Fresh) {
    let registry = &fresh.registry;
    let candidates = || [7000_u32, 7001, 7002].into_iter();
    assert_eq!(
        registry.function_uid("clicks", candidates()).await.unwrap(),
        None,
        "no job"
    );
    registry.deploy("clicks", "aaa", "alice").await.unwrap();
    registry.deploy("orders", "bbb", "alice").await.unwrap();
    assert_eq!(
        registry.job("clicks").await.unwrap().unwrap().function_uid,
        None
    );
    let clicks = registry.function_uid("clicks", candidates()).await.unwrap();
    assert_eq!(clicks, Some(7000));
    let orders = registry.function_uid("orders", candidates()).await.unwrap();
    assert_eq!(orders, Some(7001), "7000 is clicks'");
    registry.deploy("clicks", "ccc", "bob").await.unwrap();
    let reopened = Registry::open(&fresh.url).await.unwrap();
    let other_order = [7002_u32, 7001, 7000].into_iter();
    assert_eq!(
        reopened.function_uid("clicks", other_order).await.unwrap(),
        Some(7000)
    );
    assert_eq!(
        reopened.job("clicks").await.unwrap().unwrap().function_uid,
        Some(7000)
    );
    reopened.close().await;
}

fn invocation(job: &str, id: &str, started_ms: i64) -> InvocationRecord {
    InvocationRecord {
        job: job.to_owned(),
        id: id.to_owned(),
        version: 1,
        instance: "i-1".to_owned(),
        started_ms,
        duration_ms: 12,
        cold_start: true,
        init_ms: Some(3),
        split: "topic/0".to_owned(),
        first_position: "10".to_owned(),
        last_position: "19".to_owned(),
        records_in: 10,
        rows_out: 9,
        rejected: 1,
        dead_letters: 0,
        outcome: "ok".to_owned(),
        stderr_tail: "warning: one bad date\n".to_owned(),
    }
}

async fn invocations_are_kept_by_age_and_count(fresh: &Fresh) {
    let registry = &fresh.registry;
    let now = now_ms();
    let records: Vec<_> = (0..5)
        .map(|i| invocation("clicks", &format!("b{i}"), now - 1000 + i))
        .chain([invocation("clicks", "ancient", now - 10 * 86_400_000)])
        .collect();
    registry.insert_invocations(&records).await.unwrap();
    let newest = registry.invocations("clicks", 2).await.unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0], records[4]);
    let deleted = registry
        .prune_invocations(Duration::from_secs(86_400), 3)
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let ids: Vec<String> = registry
        .invocations("clicks", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.id)
        .collect();
    assert_eq!(ids, ["b4", "b3", "b2"]);
}

/// Transactions that read before they write (a deploy, a uid's first record) run at the
/// same time as other writers — a running job's invocation records — and must wait for
/// them, never fail. On SQLite a deferred transaction that read first cannot take the
/// write lock once another connection wrote, and fails with "database is locked" at
/// once, whatever the busy timeout.
async fn concurrent_writers_wait_for_each_other(fresh: &Fresh) {
    let registry = &fresh.registry;
    let deployer = |job: usize| async move {
        for round in 0..8 {
            registry
                .deploy(&format!("job-{job}"), &format!("sha-{round}"), "ops")
                .await
                .map_err(|error| format!("deploy job-{job} round {round}: {error}"))?;
            registry
                .function_uid(
                    &format!("job-{job}"),
                    60_000 + job as u32 * 10..60_010 + job as u32 * 10,
                )
                .await
                .map_err(|error| format!("uid job-{job} round {round}: {error}"))?;
        }
        Ok::<(), String>(())
    };
    let recorder = |job: usize| async move {
        for round in 0..8 {
            let records: Vec<_> = (0..20)
                .map(|i| invocation(&format!("job-{job}"), &format!("r{round}-{i}"), now_ms()))
                .collect();
            registry
                .insert_invocations(&records)
                .await
                .map_err(|error| format!("invocations job-{job} round {round}: {error}"))?;
        }
        Ok::<(), String>(())
    };
    let results = futures::future::join_all(
        (0..4)
            .map(|job| futures::future::Either::Left(deployer(job)))
            .chain((0..4).map(|job| futures::future::Either::Right(recorder(job)))),
    )
    .await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let fresh = super::Fresh::sqlite().await;
                    super::$case(&fresh).await;
                    fresh.drop_database().await;
                }
            )*
        }
        #[cfg(feature = "postgres-tests")]
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let fresh = super::Fresh::postgres().await;
                    super::$case(&fresh).await;
                    fresh.drop_database().await;
                }
            )*
        }
    };
}

on_both_databases!(
    versions_are_numbered_and_content_addressed,
    state_rollback_and_delete,
    state_survives_reopening,
    a_newer_database_is_refused,
    invocations_are_kept_by_age_and_count,
    a_jobs_function_uid_is_recorded_once_and_unique,
    concurrent_writers_wait_for_each_other,
);
