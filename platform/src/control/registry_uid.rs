//! The uid a job's functions run as, recorded in the registry (`jobs.function_uid`), so
//! that it stays the job's across restarts and nodes whatever other jobs run.

use std::collections::HashSet;

use sqlx::Row;

use super::{Registry, RegistryError, job_in};

impl Registry {
    /// The uid `job`'s functions run as: the recorded one, or else the first of
    /// `candidates` (best first) no other job holds, recorded now. `None` when the job
    /// does not exist or no candidate is free. Two nodes recording at once cannot give
    /// one uid to two jobs (a unique index); the loser's query fails and its next call
    /// reads the winner's record.
    pub async fn function_uid(
        &self,
        job: &str,
        candidates: impl Iterator<Item = u32>,
    ) -> Result<Option<i64>, RegistryError> {
        let mut tx = self.begin_write().await?;
        let Some(record) = job_in(&mut tx, job).await? else {
            return Ok(None);
        };
        if record.function_uid.is_some() {
            return Ok(record.function_uid);
        }
        let taken: HashSet<i64> =
            sqlx::query("SELECT function_uid FROM jobs WHERE function_uid IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
        let Some(uid) = candidates.map(i64::from).find(|uid| !taken.contains(uid)) else {
            return Ok(None);
        };
        sqlx::query("UPDATE jobs SET function_uid = $2 WHERE name = $1 AND function_uid IS NULL")
            .bind(job)
            .bind(uid)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(uid))
    }
}
