//! The control plane of `sluice serve`: the job [`registry`], stored and validated
//! [`bundle`]s, the supervisor that runs every registered job in its state, and the HTTP
//! API with bearer tokens.
//!
//! Invariant: what a job should be doing (its version and state) lives only in the
//! registry; the supervisor makes the process match it, so a restarted (or another) node
//! reaches the same jobs at the same versions.

pub mod api;
pub mod auth;
pub mod bundle;
pub mod deadletters;
pub mod invocations;
pub mod jobs;
pub mod logs;
mod migrations;
pub mod openapi;
pub mod page;
pub mod registry;
pub mod supervisor;
