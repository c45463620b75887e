//! Output: the declared schema, Hive partitioning, and the Parquet writer over object
//! storage.

pub mod decode;
pub mod decode_arrow;
mod decode_root;
mod json_value;
pub mod partition;
pub mod schema;
pub mod store;
pub mod writer;
