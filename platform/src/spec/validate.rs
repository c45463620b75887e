//! Validation: [`RawJob`] → [`JobSpec`], collecting every problem instead of stopping at the
//! first. Pure: the environment is a lookup function passed in.
//!
//! Invariant: a `JobSpec` is returned only when no error was found; every value in it is
//! within the documented range and every `${NAME}` reference has been expanded.
//!
//! This file checks the name, function, batch and scaling sections and picks the one
//! trigger; `[output]` is checked in `validate_output.rs`, `[dead_letter]` in
//! `validate_dead_letter.rs`, `[function] preload` and the program in
//! `validate_preload.rs` and `validate_program.rs`. A `[trigger.<kind>]` table is its
//! connector's: read and checked by it into its own configuration (see
//! `sluice_connectors::registry`, the one list of kinds), which the platform uses only
//! through `sluice_connectors::Trigger`. The field checks everyone shares are the kit in
//! `sluice_connectors::config_check`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::checker::{Checker, DAY, GIB, HOUR, KIB, KitChecker, MIB, MINUTE, SECOND, TIB};
use super::error::SpecErrors;
use super::raw::{RawBatch, RawFunction, RawJob, RawOptions, RawScaling, RawTrigger};
use super::secret::shown;
use super::types::{
    BatchSpec, Encoding, FunctionMode, FunctionSpec, InputMode, IsolationLevel, JobSpec, Ordering,
    ScalingSpec, TriggerSpec,
};
use super::units::is_env_name;
use sluice_connectors::registry::{TRIGGER_EXAMPLE, TriggerTable, trigger_kinds};

/// Default `batch.max_idle`: long enough that a steady stream (even a slow one, an event
/// every 100 ms) keeps filling its batch, short enough that the end of a backlog or a
/// burst is processed almost at once instead of after `max_wait`.
const DEFAULT_MAX_IDLE: Duration = Duration::from_millis(200);

/// What the validation needs besides the raw job: the file, its folder, the environment.
pub use sluice_connectors::config_check::ValidationContext;

/// Validates `raw` into a [`JobSpec`], or returns every problem found.
pub fn validate(raw: RawJob, context: &ValidationContext<'_>) -> Result<JobSpec, SpecErrors> {
    let mut checker = Checker(KitChecker::new(context));
    let name = checker.name(raw.name.as_deref());
    let trigger = checker.trigger(raw.trigger.as_ref(), name.as_deref());
    let function = checker.function(raw.function.as_ref());
    let batch = checker.batch(&raw.batch);
    let scaling = checker.scaling(&raw.scaling);
    let output = checker.output(raw.output.as_ref());
    let dead_letter = raw.dead_letter.as_ref().and_then(|dead_letter| {
        checker.dead_letter(dead_letter, trigger.as_ref(), name.as_deref())
    });

    match (name, trigger, function, output) {
        (Some(name), Some(trigger), Some(function), Some(output)) if checker.errors.is_empty() => {
            Ok(JobSpec {
                name,
                dir: context.dir.to_path_buf(),
                trigger,
                function,
                batch,
                scaling,
                output,
                dead_letter,
                secrets: checker.0.secrets,
            })
        }
        _ => Err(SpecErrors(checker.0.errors)),
    }
}

impl Checker<'_> {
    fn name(&mut self, raw: Option<&str>) -> Option<String> {
        let Some(name) = raw else {
            self.missing("name", "name = \"clickstream\"");
            return None;
        };
        let mut chars = name.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !well_formed || name.len() > 63 {
            self.error(
                "name",
                format!(
                    "invalid job name {}; allowed: lowercase letters, digits, '_' and '-', \
                     starting with a letter or digit, at most 63 characters",
                    shown(name)
                ),
            );
            return None;
        }
        Some(name.to_string())
    }

    /// The one `[trigger.<kind>]` table declared, checked by its connector.
    fn trigger(&mut self, raw: Option<&RawTrigger>, job_name: Option<&str>) -> Option<TriggerSpec> {
        let no_trigger =
            format!("no trigger declared; declare exactly one, e.g. {TRIGGER_EXAMPLE}");
        let Some(trigger) = raw else {
            self.error("trigger", no_trigger);
            return None;
        };
        // In the registry's order, whatever the file's.
        let kinds = trigger_kinds();
        let mut declared: Vec<&(&'static str, Box<dyn TriggerTable>)> = trigger.0.iter().collect();
        declared.sort_by_key(|(kind, _)| kinds.iter().position(|known| known == kind));
        match declared.as_slice() {
            [] => {
                self.error("trigger", no_trigger);
                None
            }
            [(_, table)] => table.check(&mut self.0, job_name).map(TriggerSpec::from),
            _ => {
                self.error(
                    "trigger",
                    format!(
                        "{} triggers declared ({}); declare exactly one",
                        declared.len(),
                        declared
                            .iter()
                            .map(|(kind, _)| *kind)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        }
    }

    fn function(&mut self, raw: Option<&RawFunction>) -> Option<FunctionSpec> {
        let Some(raw) = raw else {
            self.error(
                "function",
                "missing [function] table; declare at least command = [\"program\", ...]",
            );
            return None;
        };
        let command = match &raw.command {
            None => {
                self.missing(
                    "function.command",
                    "command = [\"python3\", \"transform.py\"]",
                );
                None
            }
            Some(command)
                if command
                    .first()
                    .is_none_or(|program| program.trim().is_empty()) =>
            {
                self.error(
                    "function.command",
                    "the command must name a program: a non-empty array whose first element is not empty",
                );
                None
            }
            Some(command) => {
                self.program(command);
                Some(command.clone())
            }
        };
        let mode = self.choice(
            "function.mode",
            raw.mode.as_deref(),
            FunctionMode::Exec,
            &[
                ("exec", FunctionMode::Exec),
                ("stream", FunctionMode::Stream),
            ],
            &[],
        );
        let encoding = self.choice(
            "function.encoding",
            raw.encoding.as_deref(),
            Encoding::Ndjson,
            &[("ndjson", Encoding::Ndjson), ("arrow", Encoding::Arrow)],
            &[],
        );
        let input_schema = self.input_schema(raw.input_schema.as_ref(), encoding);
        let input = self.choice(
            "function.input",
            raw.input.as_deref(),
            InputMode::Value,
            &[
                ("value", InputMode::Value),
                ("envelope", InputMode::Envelope),
            ],
            &[],
        );
        let timeout = self.duration(
            "function.timeout",
            raw.timeout.as_ref(),
            30 * SECOND,
            Duration::from_millis(1),
            HOUR,
        );
        let memory = self.size(
            "function.memory",
            raw.memory.as_ref(),
            16 * MIB,
            Some(4 * TIB),
        );
        let open_files = self.integer("function.open_files", raw.open_files, 1024, 16, 1_048_576);
        let cpu_time = raw.cpu_time.as_ref().map(|cpu_time| {
            self.duration(
                "function.cpu_time",
                Some(cpu_time),
                SECOND,
                SECOND,
                30 * DAY,
            )
        });
        let max_output = self
            .size(
                "function.max_output",
                raw.max_output.as_ref(),
                KIB,
                Some(64 * GIB),
            )
            .unwrap_or(256 * MIB);
        let max_processes =
            self.integer("function.max_processes", raw.max_processes, 256, 1, 65_536);
        let env = self.function_env(&raw.env);
        let max_attempts = self.integer("function.max_attempts", raw.max_attempts, 3, 1, 100);
        let retry_backoff = self.duration(
            "function.retry_backoff",
            raw.retry_backoff.as_ref(),
            SECOND,
            Duration::ZERO,
            HOUR,
        );
        let max_record_age = raw.max_record_age.as_ref().map(|age| {
            self.duration(
                "function.max_record_age",
                Some(age),
                HOUR,
                SECOND,
                365 * DAY,
            )
        });
        let preload = self.preload(raw.preload.as_deref(), command.as_deref());
        let isolation = self.choice(
            "function.isolation",
            raw.isolation.as_deref(),
            IsolationLevel::Strict,
            &[
                ("strict", IsolationLevel::Strict),
                ("best_effort", IsolationLevel::BestEffort),
            ],
            &[],
        );
        Some(FunctionSpec {
            command: command?,
            mode,
            encoding,
            input,
            input_schema,
            timeout,
            memory,
            open_files,
            cpu_time,
            max_output,
            max_processes,
            network: raw.network.unwrap_or(false),
            env,
            // Bounded to 1..=100 above, so the conversion cannot fail.
            max_attempts: u32::try_from(max_attempts).unwrap_or(3),
            retry_backoff,
            max_record_age,
            preload,
            isolation,
        })
    }

    fn function_env(&mut self, raw: &RawOptions) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (name, _) in &raw.0 {
            if !is_env_name(name) {
                self.error(
                    format!("function.env.{name}"),
                    "invalid variable name; allowed: [A-Za-z_][A-Za-z0-9_]*",
                );
            } else if name.starts_with("SLUICE_") {
                self.error(
                    format!("function.env.{name}"),
                    "names starting with SLUICE_ are reserved for the platform",
                );
            }
        }
        for (name, value) in self.options("function.env", raw, false) {
            if is_env_name(&name) && !name.starts_with("SLUICE_") {
                env.insert(name, value);
            }
        }
        env
    }

    fn batch(&mut self, raw: &RawBatch) -> BatchSpec {
        let max_records = self.integer("batch.max_records", raw.max_records, 1000, 1, 1_000_000);
        let max_bytes = self
            .size("batch.max_bytes", raw.max_bytes.as_ref(), KIB, Some(GIB))
            .unwrap_or(8 * MIB);
        let max_wait = self.duration(
            "batch.max_wait",
            raw.max_wait.as_ref(),
            2 * SECOND,
            Duration::from_millis(1),
            15 * MINUTE,
        );
        let max_idle = self.duration(
            "batch.max_idle",
            raw.max_idle.as_ref(),
            DEFAULT_MAX_IDLE,
            Duration::from_millis(1),
            15 * MINUTE,
        );
        BatchSpec {
            // At most 1_000_000 (checked above), which fits any usize.
            max_records: usize::try_from(max_records).unwrap_or(1000),
            max_bytes,
            max_wait,
            max_idle,
        }
    }

    fn scaling(&mut self, raw: &RawScaling) -> ScalingSpec {
        let max_instances = self.integer("scaling.max_instances", raw.max_instances, 1, 1, 256);
        let min_instances = self.integer("scaling.min_instances", raw.min_instances, 0, 0, 256);
        if min_instances > max_instances {
            self.error(
                "scaling.max_instances",
                format!("max_instances ({max_instances}) is below min_instances ({min_instances}); allowed: at least min_instances"),
            );
        }
        let idle_timeout = self.duration(
            "scaling.idle_timeout",
            raw.idle_timeout.as_ref(),
            30 * SECOND,
            Duration::ZERO,
            DAY,
        );
        let ordering = self.choice(
            "scaling.ordering",
            raw.ordering.as_deref(),
            Ordering::Partition,
            &[
                ("partition", Ordering::Partition),
                ("key", Ordering::Key),
                ("none", Ordering::None),
            ],
            &[],
        );
        ScalingSpec {
            // Both bounded to 0..=256 above.
            min_instances: u32::try_from(min_instances).unwrap_or(0),
            max_instances: u32::try_from(max_instances).unwrap_or(1),
            idle_timeout,
            ordering,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_trigger_kind_is_read_from_its_own_table() {
        for kind in trigger_kinds() {
            let raw: RawTrigger = toml::from_str(&format!("[{kind}]")).unwrap();
            let declared: Vec<&str> = raw.0.iter().map(|(kind, _)| *kind).collect();
            assert_eq!(declared, [*kind]);
        }
        let unknown = toml::from_str::<RawTrigger>("[sqs]").unwrap_err();
        assert!(
            unknown
                .message()
                .contains("unknown field `sqs`, expected one of `kafka`, `amqp`, `bucket`"),
            "{unknown}"
        );
    }
}
