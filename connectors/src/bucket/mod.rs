//! Bucket source: input objects from any object store (`file://`, `s3://`, …).
//!
//! The source learns about objects by **listing** a prefix every `poll_interval`, or from
//! S3 event **notifications** ([`notification`]) POSTed to an HTTP endpoint
//! ([`webhook`]) or published on an AMQP queue or a Kafka topic ([`feed`]); accepted
//! notifications wait in a durable [`spool`] until their object is done. A durable
//! [`cursor::Cursor`] beside the job's output (`_sluice/bucket/cursor.json` and its log
//! `cursor.d/`) records the objects done, so a restart neither reprocesses nor skips
//! objects. Keys with a segment starting with `_` or `.` are ignored (e.g. `_sluice/`). Each object is streamed into records by its
//! format (see [`reader`]); every record's origin names the object (bucket, key, etag) and
//! its line.
//!
//! | outcome                                                   | cursor                         |
//! |-----------------------------------------------------------|--------------------------------|
//! | every record's output durable (or dead-lettered)          | object marked done             |
//! | the job stops before that                                 | not done: read again on restart |
//! | a record cannot be read (ragged CSV row, truncated gzip, …) | that record goes to the dead letters with its key, line and reason; the others are processed; done as above |
//! | the store fails while the object is read                   | not done; error logged with the object and line; records before the error are processed; retried on restart, and a `stop_when_idle` run ends with an error |
//!
//! Delivery: an object whose output was partly written when the job stopped is read
//! again whole; the platform's commit protocol (`platform/src/commit/design.md`) names
//! output from the object version and line range and skips lines already committed, so
//! each line's output is written exactly once per object version. [`range`] reads an
//! unfinished range again for the platform's recovery. [`table`] reads and checks the
//! `[trigger.bucket]` table of `job.toml`.

pub mod config;
pub mod cursor;
pub mod feed;
pub mod notification;
pub mod range;
pub mod reader;
pub mod source;
pub mod spool;
pub mod table;
pub mod webhook;

pub use config::{BucketDiscovery, BucketTriggerConfig};
pub use reader::{InputCompression, InputFormat};
pub use source::{BucketSource, BucketSourceConfig, Discovery};

#[cfg(test)]
mod tests;
