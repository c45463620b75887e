//! The `[dead_letter]` section: one destination — NDJSON objects under a store prefix
//! (`url`) or a broker's `[dead_letter.<kind>]` table, which its connector checks (see
//! `sluice_connectors::registry`).

use super::checker::Checker;
use super::raw::RawDeadLetter;
use super::types::{DeadLetterSpec, TriggerSpec};
use sluice_connectors::Trigger;
use sluice_connectors::registry::{DeadLetterTable, dead_letter_broker_kinds};

impl Checker<'_> {
    /// Validates `[dead_letter]`; `None` when it declares nothing or has errors.
    pub(super) fn dead_letter(
        &mut self,
        raw: &RawDeadLetter,
        trigger: Option<&TriggerSpec>,
        job_name: Option<&str>,
    ) -> Option<DeadLetterSpec> {
        // In the registry's order, whatever the file's.
        let kinds = dead_letter_broker_kinds();
        let mut brokers: Vec<&(&'static str, Box<dyn DeadLetterTable>)> =
            raw.brokers.iter().collect();
        brokers.sort_by_key(|(kind, _)| kinds.iter().position(|known| known == kind));
        let declared: Vec<String> = raw
            .url
            .iter()
            .map(|_| "url".to_owned())
            .chain(
                brokers
                    .iter()
                    .map(|(kind, _)| format!("[dead_letter.{kind}]")),
            )
            .collect();
        if declared.len() > 1 {
            self.error(
                "dead_letter",
                format!(
                    "{} declared; declare one destination: {}",
                    declared.join(" and "),
                    destinations(kinds)
                ),
            );
            return None;
        }
        if let Some(url) = &raw.url {
            let url = self.expand("dead_letter.url", url)?;
            return self
                .store_url("dead_letter.url", &url)
                .map(|url| DeadLetterSpec::Store { url });
        }
        let (_, table) = brokers.first()?;
        let trigger = trigger.map(|trigger| &**trigger as &dyn Trigger);
        table
            .check(&mut self.0, trigger, job_name)
            .map(DeadLetterSpec::Broker)
    }
}

/// Every kind of destination, for a message: `url (…), [dead_letter.a] or
/// [dead_letter.b]`.
fn destinations(kinds: &[&str]) -> String {
    let mut all: Vec<String> = std::iter::once("url (NDJSON objects in a store)".to_owned())
        .chain(kinds.iter().map(|kind| format!("[dead_letter.{kind}]")))
        .collect();
    let last = all.pop().unwrap_or_default();
    if all.is_empty() {
        last
    } else {
        format!("{} or {last}", all.join(", "))
    }
}
