//! The user and group a job's function runs as: never root, one pair per job.
//!
//! Each job gets a uid (and a gid of the same number) from a range the operator sets
//! with `SLUICE_FUNCTION_UIDS=FIRST-LAST` (default [`DEFAULT_FIRST`]..=[`DEFAULT_LAST`],
//! far above the ids distributions hand out to people and services). The id is a hash
//! of the job name into the range, so a job keeps its id across restarts and nodes;
//! when two jobs of one platform process hash to the same id, the one assigned second
//! takes the next free id (in order of assignment, so stable only while the set of jobs
//! is). [`assign`] is the one place that decides; a registry that records assignments
//! can call it once per job and store the result.
//!
//! `SLUICE_FUNCTION_UIDS=off` switches users off: functions then run as the platform's
//! user, which `function.isolation = "strict"` refuses (a missing protection).
//!
//! The range is a platform setting, not a job setting: a job that could choose its uid
//! could choose another job's, and so read its bundle and signal its processes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// First id of the default range.
pub(crate) const DEFAULT_FIRST: u32 = 1_900_000_000;
/// Last id of the default range (65,536 ids).
pub(crate) const DEFAULT_LAST: u32 = DEFAULT_FIRST + 65_535;

/// The environment variable that sets the range, `FIRST-LAST`.
pub(crate) const RANGE_VARIABLE: &str = "SLUICE_FUNCTION_UIDS";

/// The user and group of a job's function processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobIdentity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// An inclusive range of ids for functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdRange {
    first: u32,
    last: u32,
}

/// A range setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{RANGE_VARIABLE}={value:?} is not a usable id range: {reason}")]
pub(crate) struct IdRangeError {
    value: String,
    reason: &'static str,
}

impl IdRange {
    /// The first id of the range as a user and group.
    pub(crate) fn first_identity(&self) -> JobIdentity {
        JobIdentity {
            uid: self.first,
            gid: self.first,
        }
    }

    /// Parses `FIRST-LAST`; root (0) and the overflow id 65534 ("nobody") may not be in it.
    pub(crate) fn parse(value: &str) -> Result<Self, IdRangeError> {
        let error = |reason| IdRangeError {
            value: value.to_owned(),
            reason,
        };
        let (first, last) = value
            .split_once('-')
            .ok_or_else(|| error("expected FIRST-LAST"))?;
        let parse = |text: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| error("not a number"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first == 0 || first > last {
            return Err(error("FIRST must be above 0 and not above LAST"));
        }
        if (first..=last).contains(&65_534) || last == u32::MAX {
            return Err(error("it must not hold 65534 (nobody) or 4294967295"));
        }
        Ok(IdRange { first, last })
    }

    /// The range from the environment, or the default one; `off` is an error that says
    /// functions run as the platform's own user (for trusted code on a machine where
    /// the runtimes live in root's home, with `function.isolation = "best_effort"`).
    pub(crate) fn from_environment() -> Result<Self, IdRangeError> {
        match std::env::var(RANGE_VARIABLE) {
            Ok(value) if value == "off" => Err(IdRangeError {
                value,
                reason: "switched off: functions run as the platform's user",
            }),
            Ok(value) => Self::parse(&value),
            Err(_) => Ok(IdRange {
                first: DEFAULT_FIRST,
                last: DEFAULT_LAST,
            }),
        }
    }

    fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

/// Ids assigned by this process, so that two jobs never share one.
#[derive(Debug, Default)]
pub(crate) struct Assignments {
    by_uid: HashMap<u32, String>,
    /// Ids recorded elsewhere (the job registry) and reserved with [`Self::reserve`].
    reserved: HashMap<String, u32>,
}

impl Assignments {
    /// Gives `job` the id `uid` from now on (the one a registry recorded for it, so that
    /// it stays the job's across restarts and nodes whatever else runs). False, and
    /// nothing changed, when another job of this process holds `uid`.
    pub(crate) fn reserve(&mut self, job: &str, uid: u32) -> bool {
        if self.by_uid.get(&uid).is_some_and(|owner| owner != job) {
            return false;
        }
        self.by_uid.retain(|_, owner| owner != job);
        self.by_uid.insert(uid, job.to_owned());
        self.reserved.insert(job.to_owned(), uid);
        true
    }

    /// The identity of `job`: its hash into `range`, or the next free id after it when
    /// another job has that one. `None` when every id of the range is taken.
    pub(crate) fn assign(&mut self, range: IdRange, job: &str) -> Option<JobIdentity> {
        if let Some(&uid) = self.reserved.get(job) {
            return Some(JobIdentity { uid, gid: uid });
        }
        let start = fnv1a(job.as_bytes()) % range.size();
        for step in 0..range.size() {
            let uid = range.first + ((start + step) % range.size()) as u32;
            match self.by_uid.get(&uid) {
                Some(owner) if owner != job => continue,
                Some(_) => {}
                None => {
                    self.by_uid.insert(uid, job.to_owned());
                }
            }
            return Some(JobIdentity { uid, gid: uid });
        }
        None
    }
}

static ASSIGNMENTS: Mutex<Option<Assignments>> = Mutex::new(None);

/// The identity of `job` in this platform process (see the module doc).
pub(crate) fn assign(range: IdRange, job: &str) -> Option<JobIdentity> {
    let mut assignments = ASSIGNMENTS.lock().unwrap_or_else(PoisonError::into_inner);
    assignments
        .get_or_insert_with(Assignments::default)
        .assign(range, job)
}

/// The ids `job` may get from the configured range, best first: its hash into the range,
/// then the following ids (wrapping). `None` when functions cannot get users of their own
/// (`SLUICE_FUNCTION_UIDS=off` or an unusable range). A registry records the first one
/// no other job holds, then [`reserve_function_uid`]s it before the job starts.
pub fn function_uid_candidates(job: &str) -> Option<impl Iterator<Item = u32>> {
    let range = IdRange::from_environment().ok()?;
    let start = fnv1a(job.as_bytes()) % range.size();
    Some((0..range.size()).map(move |step| range.first + ((start + step) % range.size()) as u32))
}

/// Makes `job`'s functions run as `uid` in this platform process (the id its registry
/// recorded), instead of the id the hash would give. False when `uid` is outside the
/// configured range or another job of this process runs as it; the job then keeps the
/// hashed id.
pub fn reserve_function_uid(job: &str, uid: u32) -> bool {
    let Ok(range) = IdRange::from_environment() else {
        return false;
    };
    if !(range.first..=range.last).contains(&uid) {
        return false;
    }
    let mut assignments = ASSIGNMENTS.lock().unwrap_or_else(PoisonError::into_inner);
    assignments
        .get_or_insert_with(Assignments::default)
        .reserve(job, uid)
}

/// 64-bit FNV-1a: stable across releases and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_id_wins_over_the_hash_and_is_never_shared() {
        let range = IdRange::parse("5000-5009").unwrap();
        let mut assignments = Assignments::default();
        let hashed = assignments.assign(range, "clicks").unwrap().uid;
        let recorded = if hashed == 5009 { 5000 } else { hashed + 1 };
        assert!(assignments.reserve("clicks", recorded));
        assert_eq!(assignments.assign(range, "clicks").unwrap().uid, recorded);
        assert!(!assignments.reserve("orders", recorded), "held by clicks");
        assert_ne!(assignments.assign(range, "orders").unwrap().uid, recorded);
    }

    #[test]
    fn a_job_keeps_its_id_and_two_jobs_never_share_one() {
        let range = IdRange::parse("5000-5001").unwrap();
        let mut first = Assignments::default();
        let a = first.assign(range, "clicks").unwrap();
        assert!((5000..=5001).contains(&a.uid));
        assert_eq!(a.uid, a.gid);
        assert_eq!(first.assign(range, "clicks"), Some(a), "same job, same id");
        // In a fresh process the same name hashes to the same id.
        assert_eq!(Assignments::default().assign(range, "clicks"), Some(a));
        let b = first.assign(range, "orders").unwrap();
        assert_ne!(a, b, "the second job takes the other id");
        assert_eq!(first.assign(range, "third"), None, "range exhausted");
    }

    #[test]
    fn unusable_ranges_are_refused_naming_the_setting() {
        for bad in ["", "10", "0-10", "20-10", "60000-70000", "x-10"] {
            let error = IdRange::parse(bad).unwrap_err().to_string();
            assert!(error.starts_with("SLUICE_FUNCTION_UIDS="), "{error}");
        }
        assert!(IdRange::parse("100000-165535").is_ok());
    }
}
