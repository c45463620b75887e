//! The registry's schema, one numbered migration at a time, embedded in the binary.
//!
//! The same SQL runs on SQLite and PostgreSQL: integers are `BIGINT`, times are
//! milliseconds since the Unix epoch, text is `TEXT`, and no table relies on an
//! auto-increment column (numbers are chosen by the queries, inside a transaction, against
//! a primary key, so two nodes sharing one database cannot hand out the same number).
//!
//! Invariant: a published migration never changes (its checksum is stored in the
//! database); a change is a new migration with the next number.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

/// `(version, description, sql)`, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "jobs versions invocations",
        r#"
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE versions (
    job TEXT NOT NULL,
    version BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    deployed_by TEXT NOT NULL,
    deployed_ms BIGINT NOT NULL,
    PRIMARY KEY (job, version)
);
CREATE UNIQUE INDEX versions_by_content ON versions (job, sha256);
CREATE TABLE invocations (
    job TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    instance TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    cold_start BIGINT NOT NULL,
    init_ms BIGINT,
    split TEXT NOT NULL,
    first_position TEXT NOT NULL,
    last_position TEXT NOT NULL,
    records_in BIGINT NOT NULL,
    rows_out BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    dead_letters BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    stderr_tail TEXT NOT NULL,
    PRIMARY KEY (job, id)
);
CREATE INDEX invocations_by_time ON invocations (job, started_ms);
"#,
    ),
    (
        2,
        "jobs function_uid",
        r#"
ALTER TABLE jobs ADD COLUMN function_uid BIGINT;
CREATE UNIQUE INDEX jobs_by_function_uid ON jobs (function_uid);
"#,
    ),
];

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// The embedded migrations, as sqlx's migrator reads them.
#[derive(Debug)]
pub struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
