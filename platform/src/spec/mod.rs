//! `job.toml`: parsing, validation into [`types`], and errors that name the file and field.

pub mod raw;
pub mod types;
pub mod units;

pub use types::*;
