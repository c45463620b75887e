//! Kafka source (rdkafka).

pub mod config;
pub mod source;
