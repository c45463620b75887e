//! The job registry: jobs, their immutable numbered versions and their state, kept in
//! SQLite (embedded, the default) or PostgreSQL (shared by several nodes).
//!
//! Every query is written once and runs on both databases (sqlx's `Any` driver, `$n`
//! placeholders, `BIGINT`/`TEXT` columns). Nothing here is kept in memory: a registry
//! opened again, by this process after a restart or by another node, sees the same jobs.
//!
//! | table         | one row per                                             |
//! |---------------|---------------------------------------------------------|
//! | `jobs`        | registered job: current version, state (`running`, `paused`, `failed`) and reason |
//! | `versions`    | deployed bundle: number, sha256, who deployed it, when  |
//! | `invocations` | batch attempt (see [`InvocationRecord`])                |
//!
//! The schema version lives in the database (sqlx's migration table). A database migrated
//! by a newer binary is refused with [`RegistryError::NewerSchema`] instead of being used
//! with queries that no longer match it.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Row};

use super::migrations::{EmbeddedMigrations, latest_version};

#[path = "registry_uid.rs"]
mod function_uid;

/// What went wrong in the registry. Database errors are external (the database is down
/// or refused the query; retrying may help); the others are the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry url {url:?} is not supported; use sqlite://PATH or postgres://…")]
    UnsupportedUrl { url: String },
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "registry database has schema version {found}, newer than this binary's {supported}; \
         upgrade sluice to use it"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("registry migration failed: {0}")]
    Migration(MigrateError),
    #[error("registry holds an unknown job state {0:?}")]
    UnknownState(String),
}

/// What the registry wants a job to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Consuming at its current version.
    Running,
    /// Drained and held: no function process, source positions kept.
    Paused,
    /// Meant to run but the last start or run failed; `reason` says why. The supervisor
    /// keeps retrying it.
    Failed,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DesiredState {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "running" => Ok(Self::Running),
            "paused" => Ok(Self::Paused),
            "failed" => Ok(Self::Failed),
            other => Err(RegistryError::UnknownState(other.to_owned())),
        }
    }
}

/// A registered job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    pub name: String,
    /// The version that runs (or would run, when paused).
    pub version: i64,
    pub state: DesiredState,
    pub reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The uid (and gid) its functions run as, recorded at its first start
    /// ([`Registry::function_uid`]); `None` until then, or when functions cannot get
    /// users of their own.
    pub function_uid: Option<i64>,
}

/// One immutable version of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VersionRecord {
    pub job: String,
    pub version: i64,
    /// Hex sha256 of the bundle (`.tar.gz`) as uploaded.
    pub sha256: String,
    pub deployed_by: String,
    pub deployed_ms: i64,
}

/// What [`Registry::deploy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployed {
    pub version: i64,
    /// A new version number was created (false: the same content was deployed before).
    pub new_version: bool,
    /// The job's current version changed (false: it already ran this content).
    pub changed: bool,
}

/// One batch attempt, as the status page and `GET /v1/jobs/{name}/invocations` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvocationRecord {
    pub job: String,
    /// Unique within the job.
    pub id: String,
    pub version: i64,
    pub instance: String,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub cold_start: bool,
    pub init_ms: Option<i64>,
    /// Partition, queue or bucket the batch came from.
    pub split: String,
    pub first_position: String,
    pub last_position: String,
    pub records_in: i64,
    pub rows_out: i64,
    pub rejected: i64,
    pub dead_letters: i64,
    /// `ok`, `function_error`, `timeout`, `crash`, `protocol_error`, `schema_error`,
    /// `killed_for_memory`.
    pub outcome: String,
    /// The last lines of the function's stderr (at most 4 KiB).
    pub stderr_tail: String,
}

/// The registry: a connection pool and the queries.
#[derive(Debug, Clone)]
pub struct Registry {
    pool: AnyPool,
    /// Whether the database is SQLite, whose write transactions must say so up front
    /// ([`Registry::begin_write`]).
    sqlite: bool,
}

impl Registry {
    /// Connects to `url` (`sqlite://PATH`, created if missing, or `postgres://…`) and
    /// brings its schema up to this binary's version.
    pub async fn open(url: &str) -> Result<Self, RegistryError> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            // Create the file on first use; keep other options the caller gave.
            if path.contains('?') {
                url.to_owned()
            } else {
                format!("sqlite://{path}?mode=rwc")
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_owned()
        } else {
            return Err(RegistryError::UnsupportedUrl {
                url: url.to_owned(),
            });
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        let sqlite = url.starts_with("sqlite:");
        if sqlite {
            // Readers do not block the writer; a busy writer is waited for.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let registry = Self { pool, sqlite };
        registry.migrate().await?;
        Ok(registry)
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), waiting for another writer within the busy timeout: a
    /// deferred transaction that read first cannot take it once another connection has
    /// written, and fails at once with "database is locked". PostgreSQL needs no such
    /// thing.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, RegistryError> {
        let statement = if self.sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        Ok(self.pool.begin_with(statement).await?)
    }

    async fn migrate(&self) -> Result<(), RegistryError> {
        let migrator = Migrator::new(EmbeddedMigrations)
            .await
            .map_err(RegistryError::Migration)?;
        match migrator.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(MigrateError::VersionMissing(_)) => Err(RegistryError::NewerSchema {
                found: self.schema_version().await?,
                supported: latest_version(),
            }),
            Err(error) => Err(RegistryError::Migration(error)),
        }
    }

    /// The newest migration applied to the database.
    pub async fn schema_version(&self) -> Result<i64, RegistryError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Records a deployment of the bundle with `sha256` as `job`'s current version and
    /// sets the job running. The same content deployed again reuses its version number;
    /// new content gets the next number.
    pub async fn deploy(
        &self,
        job: &str,
        sha256: &str,
        deployed_by: &str,
    ) -> Result<Deployed, RegistryError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let existing: Option<i64> =
            sqlx::query("SELECT version FROM versions WHERE job = $1 AND sha256 = $2")
                .bind(job)
                .bind(sha256)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get(0))
                .transpose()?;
        let (version, new_version) = match existing {
            Some(version) => (version, false),
            None => {
                let next: i64 = sqlx::query(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE job = $1",
                )
                .bind(job)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
                sqlx::query(
                    "INSERT INTO versions (job, version, sha256, deployed_by, deployed_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(job)
                .bind(next)
                .bind(sha256)
                .bind(deployed_by)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (next, true)
            }
        };
        let current = job_in(&mut tx, job).await?;
        let changed = match &current {
            Some(record) if record.version == version => false,
            Some(_) => {
                sqlx::query(
                    "UPDATE jobs SET version = $2, state = 'running', reason = NULL, \
                     updated_ms = $3 WHERE name = $1",
                )
                .bind(job)
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                true
            }
            None => {
                sqlx::query(
                    "INSERT INTO jobs (name, version, state, reason, created_ms, updated_ms) \
                     VALUES ($1, $2, 'running', NULL, $3, $3)",
                )
                .bind(job)
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                true
            }
        };
        tx.commit().await?;
        Ok(Deployed {
            version,
            new_version,
            changed,
        })
    }

    /// Makes an existing `version` the job's current one and sets it running (rollback).
    /// `None` when the job or the version does not exist.
    pub async fn set_version(
        &self,
        job: &str,
        version: i64,
    ) -> Result<Option<JobRecord>, RegistryError> {
        let known = sqlx::query("SELECT version FROM versions WHERE job = $1 AND version = $2")
            .bind(job)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        if known.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "UPDATE jobs SET version = $2, state = 'running', reason = NULL, updated_ms = $3 \
             WHERE name = $1",
        )
        .bind(job)
        .bind(version)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.job(job).await
    }

    /// Sets a job's state; `false` when there is no such job.
    pub async fn set_state(
        &self,
        job: &str,
        state: DesiredState,
        reason: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let result =
            sqlx::query("UPDATE jobs SET state = $2, reason = $3, updated_ms = $4 WHERE name = $1")
                .bind(job)
                .bind(state.as_str())
                .bind(reason.map(str::to_owned))
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Records that `version` of a job failed (or, with `None`, runs again), unless the
    /// job has been paused, deleted or moved to another version meanwhile.
    pub async fn report_run(
        &self,
        job: &str,
        version: i64,
        failure: Option<&str>,
    ) -> Result<(), RegistryError> {
        let state = if failure.is_some() {
            DesiredState::Failed
        } else {
            DesiredState::Running
        };
        sqlx::query(
            "UPDATE jobs SET state = $3, reason = $4, updated_ms = $5 \
             WHERE name = $1 AND version = $2 AND state <> 'paused' \
             AND (state <> $3 OR COALESCE(reason, '') <> COALESCE($4, ''))",
        )
        .bind(job)
        .bind(version)
        .bind(state.as_str())
        .bind(failure.map(str::to_owned))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a job from the list; its versions stay (numbers are never reused).
    /// `false` when there was no such job.
    pub async fn delete(&self, job: &str) -> Result<bool, RegistryError> {
        let result = sqlx::query("DELETE FROM jobs WHERE name = $1")
            .bind(job)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    pub async fn job(&self, job: &str) -> Result<Option<JobRecord>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        job_in(&mut conn, job).await
    }

    /// Every registered job, by name.
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, RegistryError> {
        let rows = sqlx::query(&format!("{JOB_COLUMNS} ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// A job's versions, oldest first (also of a deleted job).
    pub async fn versions(&self, job: &str) -> Result<Vec<VersionRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT job, version, sha256, deployed_by, deployed_ms FROM versions \
             WHERE job = $1 ORDER BY version",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(VersionRecord {
                    job: row.try_get(0)?,
                    version: row.try_get(1)?,
                    sha256: row.try_get(2)?,
                    deployed_by: row.try_get(3)?,
                    deployed_ms: row.try_get(4)?,
                })
            })
            .collect()
    }

    pub async fn version(
        &self,
        job: &str,
        version: i64,
    ) -> Result<Option<VersionRecord>, RegistryError> {
        Ok(self
            .versions(job)
            .await?
            .into_iter()
            .find(|record| record.version == version))
    }

    /// Stores invocation records in one transaction.
    pub async fn insert_invocations(
        &self,
        records: &[InvocationRecord],
    ) -> Result<(), RegistryError> {
        let mut tx = self.begin_write().await?;
        for record in records {
            sqlx::query(
                "INSERT INTO invocations (job, id, version, instance, started_ms, duration_ms, \
                 cold_start, init_ms, split, first_position, last_position, records_in, \
                 rows_out, rejected, dead_letters, outcome, stderr_tail) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind(&record.job)
            .bind(&record.id)
            .bind(record.version)
            .bind(&record.instance)
            .bind(record.started_ms)
            .bind(record.duration_ms)
            .bind(i64::from(record.cold_start))
            .bind(record.init_ms)
            .bind(&record.split)
            .bind(&record.first_position)
            .bind(&record.last_position)
            .bind(record.records_in)
            .bind(record.rows_out)
            .bind(record.rejected)
            .bind(record.dead_letters)
            .bind(&record.outcome)
            .bind(&record.stderr_tail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A job's most recent invocations, newest first.
    pub async fn invocations(
        &self,
        job: &str,
        limit: i64,
    ) -> Result<Vec<InvocationRecord>, RegistryError> {
        let rows = sqlx::query(
            "SELECT job, id, version, instance, started_ms, duration_ms, cold_start, init_ms, \
             split, first_position, last_position, records_in, rows_out, rejected, \
             dead_letters, outcome, stderr_tail FROM invocations WHERE job = $1 \
             ORDER BY started_ms DESC, id DESC LIMIT $2",
        )
        .bind(job)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invocation_from_row).collect()
    }

    /// Deletes invocation records older than `max_age` and, per job, all but the newest
    /// `max_per_job`. Returns how many were deleted.
    pub async fn prune_invocations(
        &self,
        max_age: Duration,
        max_per_job: i64,
    ) -> Result<u64, RegistryError> {
        let cutoff = now_ms() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX / 2);
        let mut deleted = sqlx::query("DELETE FROM invocations WHERE started_ms < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let jobs = sqlx::query("SELECT DISTINCT job FROM invocations")
            .fetch_all(&self.pool)
            .await?;
        for row in jobs {
            let job: String = row.try_get(0)?;
            let keep_from = sqlx::query(
                "SELECT started_ms FROM invocations WHERE job = $1 \
                 ORDER BY started_ms DESC LIMIT 1 OFFSET $2",
            )
            .bind(&job)
            .bind(max_per_job)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = keep_from {
                let oldest_kept: i64 = row.try_get(0)?;
                deleted +=
                    sqlx::query("DELETE FROM invocations WHERE job = $1 AND started_ms <= $2")
                        .bind(&job)
                        .bind(oldest_kept)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
            }
        }
        Ok(deleted)
    }

    /// Closes the pool (waits for queries in flight).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const JOB_COLUMNS: &str =
    "SELECT name, version, state, reason, created_ms, updated_ms, function_uid FROM jobs";

async fn job_in(
    conn: &mut sqlx::AnyConnection,
    job: &str,
) -> Result<Option<JobRecord>, RegistryError> {
    let row = sqlx::query(&format!("{JOB_COLUMNS} WHERE name = $1"))
        .bind(job)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

fn job_from_row(row: &AnyRow) -> Result<JobRecord, RegistryError> {
    let state: String = row.try_get(2)?;
    Ok(JobRecord {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        state: state.parse()?,
        reason: row.try_get(3)?,
        created_ms: row.try_get(4)?,
        updated_ms: row.try_get(5)?,
        function_uid: row.try_get(6)?,
    })
}

fn invocation_from_row(row: &AnyRow) -> Result<InvocationRecord, RegistryError> {
    let cold_start: i64 = row.try_get(6)?;
    Ok(InvocationRecord {
        job: row.try_get(0)?,
        id: row.try_get(1)?,
        version: row.try_get(2)?,
        instance: row.try_get(3)?,
        started_ms: row.try_get(4)?,
        duration_ms: row.try_get(5)?,
        cold_start: cold_start != 0,
        init_ms: row.try_get(7)?,
        split: row.try_get(8)?,
        first_position: row.try_get(9)?,
        last_position: row.try_get(10)?,
        records_in: row.try_get(11)?,
        rows_out: row.try_get(12)?,
        rejected: row.try_get(13)?,
        dead_letters: row.try_get(14)?,
        outcome: row.try_get(15)?,
        stderr_tail: row.try_get(16)?,
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[path = "tests/registry.rs"]
mod tests;
