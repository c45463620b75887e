//! The function runtime: spawning sandboxed instances and speaking the function protocol.

pub mod encode;
pub mod exec;
pub mod protocol;
pub mod sandbox;
pub mod stream;
