//! Field checks shared by every section of `job.toml`: durations, sizes, integer ranges,
//! fixed choices, `${NAME}` expansion and option tables. Each check records an error naming
//! the field and returns a usable value (the default, or `None`), so validation goes on and
//! reports every problem at once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::SpecError;
use super::raw::{RawDuration, RawOptions, RawSize};
use super::secret::{Secrets, is_secret_name, shown};
use super::units::{
    env_references, expand_env, format_duration, format_size, is_env_reference, parse_duration,
    parse_size,
};
use super::validate::ValidationContext;

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;
pub(super) const SECOND: Duration = Duration::from_secs(1);
pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(super) const TIB: u64 = 1 << 40;

/// Accumulates errors while checking fields one by one, and the secrets met on the way.
pub(super) struct Checker<'a> {
    pub(super) context: &'a ValidationContext<'a>,
    pub(super) errors: Vec<SpecError>,
    /// Secret values met so far; every message recorded is scrubbed of them.
    pub(super) secrets: Secrets,
}

impl Checker<'_> {
    /// Records a problem with `field`; the message is scrubbed of every secret met so far
    /// (values are expanded, and their secrets recorded, before they are checked).
    pub(super) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let message = message.into();
        let message = self.secrets.redact_values(&message).into_owned();
        self.errors
            .push(SpecError::new(self.context.file, field, message));
    }

    pub(super) fn missing(&mut self, field: &str, example: &str) {
        self.error(field, format!("required field is missing, e.g. {example}"));
    }

    /// Expands `${NAME}` references; on failure records an error naming `field`. Values of
    /// references whose name looks secret are recorded as secrets.
    pub(super) fn expand(&mut self, field: &str, value: &str) -> Option<String> {
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

    pub(super) fn duration(
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

    pub(super) fn size(
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

    pub(super) fn integer(
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
    pub(super) fn choice<T: Copy>(
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
    pub(super) fn options(
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
}
