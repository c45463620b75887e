//! The one list of trigger kinds, and of dead-letter destinations on a broker: what this
//! build supports, each with the connector table that reads its `[trigger.<kind>]` (or
//! `[dead_letter.<kind>]`) table of `job.toml`.
//!
//! The platform reads `[trigger]` as a table of kind → table, and `[dead_letter]` as
//! `url` plus kind → table: for each kind written it finds the entry here and lets the
//! connector's serde struct read the table (so unknown fields and type errors are
//! reported as for any other table, on the field where they are written), then the
//! connector checks it into its own configuration ([`TriggerTable::check`],
//! [`DeadLetterTable::check`]). A kind not listed here is an unknown field. Adding a
//! connector adds one line to [`supported_triggers`] (and, when it can keep dead
//! letters, one to [`supported_dead_letter_brokers`]); nothing outside this crate names
//! a kind.
//!
//! The entries are generic over the serde deserializer the platform reads the file with,
//! so the tables stay plain `#[derive(Deserialize)]` structs.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer};

use crate::amqp::table::{RawAmqpDeadLetter, RawAmqpTrigger};
use crate::bucket::table::RawBucketTrigger;
use crate::config_check::Checker;
use crate::dead_letter::LetterBroker;
use crate::kafka::table::{RawKafkaDeadLetter, RawKafkaTrigger};
use crate::trigger::Trigger;

/// Every trigger this build supports, in the order messages list them.
pub fn supported_triggers<'de, D: Deserializer<'de>>() -> Vec<TableKind<'de, D, dyn TriggerTable>> {
    vec![
        TableKind::trigger::<RawKafkaTrigger>("kafka"),
        TableKind::trigger::<RawAmqpTrigger>("amqp"),
        TableKind::trigger::<RawBucketTrigger>("bucket"),
    ]
}

/// Every broker that can keep dead letters, in the order messages list them.
pub fn supported_dead_letter_brokers<'de, D: Deserializer<'de>>()
-> Vec<TableKind<'de, D, dyn DeadLetterTable>> {
    vec![
        TableKind::dead_letter::<RawKafkaDeadLetter>("kafka"),
        TableKind::dead_letter::<RawAmqpDeadLetter>("amqp"),
    ]
}

/// What a job file with no trigger is told to write.
pub const TRIGGER_EXAMPLE: &str =
    "[trigger.kafka] with brokers and topic, or [trigger.amqp] with url and queue";

/// A `[trigger.<kind>]` table as written, read by its connector.
pub trait TriggerTable: Send + Sync + std::fmt::Debug {
    /// Checks every field, recording each problem on `checker` under the field's name
    /// (`trigger.<kind>.<field>`); the connector's configuration when there is none.
    /// `job` is the job's name when it is valid (defaults such as the consumer group
    /// derive from it).
    fn check(&self, checker: &mut Checker<'_>, job: Option<&str>) -> Option<Arc<dyn Trigger>>;
}

/// A `[dead_letter.<kind>]` table as written, read by its connector.
pub trait DeadLetterTable: Send + Sync + std::fmt::Debug {
    /// Checks every field as [`TriggerTable::check`] does. `trigger` is the job's
    /// validated trigger (a table on the same broker may take its address from it);
    /// `None` when the trigger has errors, already reported.
    fn check(
        &self,
        checker: &mut Checker<'_>,
        trigger: Option<&dyn Trigger>,
        job: Option<&str>,
    ) -> Option<Arc<dyn LetterBroker>>;
}

/// One kind in a list above: its name in the file and how its table is read.
pub struct TableKind<'de, D: Deserializer<'de>, T: ?Sized> {
    /// `<kind>` in `[trigger.<kind>]` or `[dead_letter.<kind>]`.
    pub name: &'static str,
    /// Reads the table with the connector's serde struct.
    pub read: fn(D) -> Result<Box<T>, D::Error>,
    _lifetime: PhantomData<&'de ()>,
}

impl<'de, D: Deserializer<'de>> TableKind<'de, D, dyn TriggerTable> {
    fn trigger<R: TriggerTable + Deserialize<'de> + 'static>(name: &'static str) -> Self {
        Self {
            name,
            read: |deserializer| Ok(Box::new(R::deserialize(deserializer)?)),
            _lifetime: PhantomData,
        }
    }
}

impl<'de, D: Deserializer<'de>> TableKind<'de, D, dyn DeadLetterTable> {
    fn dead_letter<R: DeadLetterTable + Deserialize<'de> + 'static>(name: &'static str) -> Self {
        Self {
            name,
            read: |deserializer| Ok(Box::new(R::deserialize(deserializer)?)),
            _lifetime: PhantomData,
        }
    }
}

/// A deserializer for listing names only: the lists do not depend on it.
type NamesOnly = serde::de::value::UnitDeserializer<serde::de::value::Error>;

/// The names of [`supported_triggers`], in order.
pub fn trigger_kinds() -> &'static [&'static str] {
    static KINDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KINDS.get_or_init(|| {
        supported_triggers::<NamesOnly>()
            .iter()
            .map(|kind| kind.name)
            .collect()
    })
}

/// The names of [`supported_dead_letter_brokers`], in order.
pub fn dead_letter_broker_kinds() -> &'static [&'static str] {
    static KINDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KINDS.get_or_init(|| {
        supported_dead_letter_brokers::<NamesOnly>()
            .iter()
            .map(|kind| kind.name)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config_check::ValidationContext;

    #[test]
    fn kinds_are_listed_once_each() {
        for kinds in [trigger_kinds(), dead_letter_broker_kinds()] {
            let mut sorted = kinds.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), kinds.len(), "{kinds:?}");
        }
        assert_eq!(trigger_kinds(), ["kafka", "amqp", "bucket"]);
        assert_eq!(dead_letter_broker_kinds(), ["kafka", "amqp"]);
    }

    /// The smallest valid table of each kind.
    fn minimal_table(kind: &str) -> serde_json::Value {
        match kind {
            "kafka" => serde_json::json!({ "brokers": "h:9092", "topic": "t" }),
            "amqp" => serde_json::json!({ "url": "amqp://guest:guest@h:5672/%2f", "queue": "q" }),
            "bucket" => serde_json::json!({ "url": "s3://landing" }),
            other => panic!("no minimal table for {other}"),
        }
    }

    #[test]
    fn each_kind_reads_its_table_and_checks_into_a_trigger_of_that_kind() {
        let env = |_: &str| None;
        let context = ValidationContext {
            file: Path::new("/jobs/j/job.toml"),
            dir: Path::new("/jobs/j"),
            env: &env,
        };
        for kind in supported_triggers::<serde_json::Value>() {
            let table = (kind.read)(minimal_table(kind.name)).unwrap();
            let mut checker = Checker::new(&context);
            let trigger = table.check(&mut checker, Some("j"));
            assert!(checker.errors.is_empty(), "{:?}", checker.errors);
            assert_eq!(trigger.map(|trigger| trigger.kind()), Some(kind.name));
        }
    }

    #[test]
    fn a_dead_letter_table_takes_its_brokers_address_from_a_trigger_of_its_kind() {
        let env = |_: &str| None;
        let context = ValidationContext {
            file: Path::new("/jobs/j/job.toml"),
            dir: Path::new("/jobs/j"),
            env: &env,
        };
        for kind in supported_dead_letter_brokers::<serde_json::Value>() {
            let trigger = supported_triggers::<serde_json::Value>()
                .into_iter()
                .find(|trigger| trigger.name == kind.name)
                .map(|trigger| (trigger.read)(minimal_table(kind.name)).unwrap())
                .and_then(|table| table.check(&mut Checker::new(&context), Some("j")))
                .unwrap();
            let field = if kind.name == "kafka" {
                "topic"
            } else {
                "queue"
            };
            let table = (kind.read)(serde_json::json!({ field: "dead" })).unwrap();
            let mut checker = Checker::new(&context);
            let broker = table.check(&mut checker, Some(trigger.as_ref()), Some("j"));
            assert!(checker.errors.is_empty(), "{:?}", checker.errors);
            assert!(broker.is_some(), "{}", kind.name);
        }
    }
}
