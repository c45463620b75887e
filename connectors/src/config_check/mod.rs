//! The field-checking kit for configuration tables (`job.toml` and the tables each
//! connector owns in it): errors that name the file, the field and what is allowed,
//! `${NAME}` expansion through an environment lookup, durations, sizes, integer ranges,
//! fixed choices, option tables, store URLs, and the secrets met on the way.
//!
//! Each check records an error naming the field and returns a usable value (the default,
//! or `None`), so validation goes on and reports every problem at once. Invariants: every
//! message recorded is scrubbed of the secrets met so far, and every value a check
//! returns has had its `${NAME}` references expanded. Pure: the environment is a lookup
//! passed in, the file system is never read.
//!
//! The connectors use it to check their `[trigger.<kind>]` and `[dead_letter.<kind>]`
//! tables into their configurations (see [`crate::registry`]); the platform uses it for
//! the rest of the job file.

pub mod error;
pub mod raw;
pub mod secret;
mod store_url;
pub mod units;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use error::SpecError;
use raw::{RawDuration, RawOptions, RawSize};
use secret::{Secrets, is_secret_name, shown};
use units::{
    env_references, expand_env, format_duration, format_size, is_env_reference, parse_duration,
    parse_size,
};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const SECOND: Duration = Duration::from_secs(1);
pub const MINUTE: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);

pub const TIB: u64 = 1 << 40;

/// What the checks need besides the values: where they were written and the environment.
pub struct ValidationContext<'a> {
    /// The job file, for error messages.
    pub file: &'a Path,
    /// The job folder (absolute); relative paths resolve against it.
    pub dir: &'a Path,
    /// Environment lookup for `${NAME}` references.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Accumulates errors while checking fields one by one, and the secrets met on the way.
pub struct Checker<'a> {
    pub context: &'a ValidationContext<'a>,
    pub errors: Vec<SpecError>,
    /// Secret values met so far; every message recorded is scrubbed of them.
    pub secrets: Secrets,
}

impl<'a> Checker<'a> {
    /// A checker with nothing recorded yet.
    pub fn new(context: &'a ValidationContext<'a>) -> Self {
        Self {
            context,
            errors: Vec::new(),
            secrets: Secrets::default(),
        }
    }

    /// Records a problem with `field`; the message is scrubbed of every secret met so far
    /// (values are expanded, and their secrets recorded, before they are checked).
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let message = message.into();
        let message = self.secrets.redact_values(&message).into_owned();
        self.errors
            .push(SpecError::new(self.context.file, field, message));
    }

    pub fn missing(&mut self, field: &str, example: &str) {
        self.error(field, format!("required field is missing, e.g. {example}"));
    }

    /// Expands `${NAME}` references; on failure records an error naming `field`. Values of
    /// references whose name looks secret are recorded as secrets.
    pub fn expand(&mut self, field: &str, value: &str) -> Option<String> {
        for name in env_references(value) {
            if is_secret_name(name)
                && let Some(secret) = (self.context.env)(name)
            {
                self.secrets.insert(&secret);
            }
        }
        match expand_env(value, self.context.env) {
            Ok(expanded) => Some(expanded),
            Err(error) => {
                self.error(field, error.to_string());
                None
            }
        }
    }

    pub fn duration(
        &mut self,
        field: &str,
        raw: Option<&RawDuration>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(RawDuration(text)) = raw else {
            return default;
        };
        let quoted = shown(text);
        match parse_duration(text) {
            Ok(value) if value >= min && value <= max => value,
            Ok(_) if min.is_zero() => {
                self.error(
                    field,
                    format!(
                        "{quoted} is too long; allowed: at most {}",
                        format_duration(max)
                    ),
                );
                default
            }
            Ok(_) => {
                self.error(
                    field,
                    format!(
                        "{quoted} is out of range; allowed: {} to {}",
                        format_duration(min),
                        format_duration(max)
                    ),
                );
                default
            }
            Err(message) => {
                self.error(field, message);
                default
            }
        }
    }

    pub fn size(
        &mut self,
        field: &str,
        raw: Option<&RawSize>,
        min: u64,
        max: Option<u64>,
    ) -> Option<u64> {
        let value = match raw? {
            RawSize::Bytes(bytes) => match u64::try_from(*bytes) {
                Ok(bytes) => bytes,
                Err(_) => {
                    self.error(
                        field,
                        format!("{bytes} is negative; sizes are positive, e.g. \"512MiB\""),
                    );
                    return None;
                }
            },
            RawSize::Text(text) => match parse_size(text) {
                Ok(bytes) => bytes,
                Err(message) => {
                    let message = match max {
                        Some(max) if message.contains("too large") => format!(
                            "{message}; allowed: {} to {}",
                            format_size(min),
                            format_size(max)
                        ),
                        _ => message,
                    };
                    self.error(field, message);
                    return None;
                }
            },
        };
        match max {
            Some(max) if value > max => {
                self.error(
                    field,
                    format!(
                        "{} is too large; allowed: {} to {}",
                        format_size(value),
                        format_size(min),
                        format_size(max)
                    ),
                );
                None
            }
            _ if value < min => {
                self.error(
                    field,
                    format!(
                        "{} is too small; allowed: at least {}",
                        format_size(value),
                        format_size(min)
                    ),
                );
                None
            }
            _ => Some(value),
        }
    }

    pub fn integer(
        &mut self,
        field: &str,
        raw: Option<i64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let Some(value) = raw else {
            return default;
        };
        match u64::try_from(value) {
            Ok(value) if value >= min && value <= max => value,
            _ if value == i64::MAX || value == i64::MIN => {
                self.error(
                    field,
                    format!(
                        "the number is too large (beyond ±{}); allowed: {min} to {max}",
                        i64::MAX
                    ),
                );
                default
            }
            _ => {
                self.error(
                    field,
                    format!("{value} is out of range; allowed: {min} to {max}"),
                );
                default
            }
        }
    }

    /// Picks one of `choices` (`(word, value)`); `unsupported` words are recognised but not
    /// built in this build.
    pub fn choice<T: Copy>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        default: T,
        choices: &[(&str, T)],
        unsupported: &[&str],
    ) -> T {
        let Some(word) = raw else {
            return default;
        };
        let allowed: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let quoted = shown(word);
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == word) {
            return *value;
        }
        if unsupported.contains(&word) {
            self.error(
                field,
                format!(
                    "{quoted} is not supported yet in this build; supported: {}",
                    allowed.join(", ")
                ),
            );
        } else {
            self.error(
                field,
                format!("unknown value {quoted}; allowed: {}", allowed.join(", ")),
            );
        }
        default
    }

    /// Expands an options table; keys that name secrets must be `${NAME}` references.
    pub fn options(
        &mut self,
        field: &str,
        raw: &RawOptions,
        secrets_from_env_only: bool,
    ) -> BTreeMap<String, String> {
        let mut options = BTreeMap::new();
        for (key, value) in &raw.0 {
            let key_field = format!("{field}.{key}");
            let secret = is_secret_name(key);
            if secrets_from_env_only && secret && !is_env_reference(value) {
                self.error(
                    key_field,
                    "holds a secret, which must come from the environment: write it as a reference \
                     such as \"${NAME}\", never as a literal value",
                );
                continue;
            }
            if let Some(expanded) = self.expand(&key_field, value) {
                if secret {
                    self.secrets.insert(&expanded);
                }
                options.insert(key.clone(), expanded);
            }
        }
        options
    }

    /// Runs a table's checks for a table nested elsewhere, so its errors name the field
    /// where it is written (`trigger.bucket.amqp.queue`, not `trigger.amqp.queue`).
    pub fn nested<T>(
        &mut self,
        checked_as: &str,
        written_as: &str,
        check: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        let before = self.errors.len();
        let checked = check(self);
        for error in &mut self.errors[before..] {
            if let Some(rest) = error.field.strip_prefix(checked_as) {
                error.field = format!("{written_as}{rest}");
            }
        }
        checked
    }
}
