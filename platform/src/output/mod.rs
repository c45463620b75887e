//! Output: the declared schema, Hive partitioning, and the Parquet writer over object
//! storage.

pub mod decode;
mod json_value;
pub mod partition;
pub mod schema;
pub mod store;
pub mod writer;
