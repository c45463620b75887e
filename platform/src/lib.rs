//! The Sluice platform: job specs, batching, the function runtime, Parquet output and
//! commits. The CLI (`sluice`) is a thin layer over this crate.

pub mod batcher;
pub mod commit;
pub mod control;
pub mod deadletter;
pub mod function;
pub mod invoke;
pub mod output;
pub mod pipeline;
pub mod pool;
pub mod spec;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trigger;
