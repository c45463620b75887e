//! The field-checking kit (`sluice_connectors::config_check`) as this folder's checks use
//! it: a newtype over its [`KitChecker`], so the sections of `job.toml` that are the
//! platform's own (name, function, batch, scaling, output) add their checks as methods
//! here while every kit check stays callable on it.

use std::ops::{Deref, DerefMut};

pub(super) use sluice_connectors::config_check::Checker as KitChecker;
pub(super) use sluice_connectors::config_check::{DAY, GIB, HOUR, KIB, MIB, MINUTE, SECOND, TIB};

/// Accumulates errors and secrets while the job's sections are checked one by one.
pub(super) struct Checker<'a>(pub(super) KitChecker<'a>);

impl<'a> Deref for Checker<'a> {
    type Target = KitChecker<'a>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Checker<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
