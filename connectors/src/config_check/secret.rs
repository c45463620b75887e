//! Secrets in a job and how they are shown: never.
//!
//! A value is secret when it came from a `${NAME}` reference whose name looks secret
//! ([`is_secret_name`]), from the password of a URL's userinfo, or from an option (or
//! function environment variable) whose key looks secret. Validation collects every such
//! value into the job's [`Secrets`]; anything that prints text which may hold one
//! (messages, logs, `/status`) passes it through [`Secrets::redact`]. The types here mask
//! in their `Debug` and `Display`, so a secret cannot be printed by accident.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// What a masked secret is shown as.
pub use crate::text::MASK;

/// Name parts (case-insensitive) that mark a variable or option key as holding a secret.
const SECRET_MARKERS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "credential",
    "private",
    "apikey",
    "api_key",
    "session_key",
];

/// Secrets shorter than this are not scrubbed from free text (a 1-character "secret"
/// would mask every occurrence of that character); they are still never echoed by
/// validation.
const MIN_SCRUBBED_LEN: usize = 4;

/// Whether an environment variable name or option key names a secret
/// (`AWS_SECRET_ACCESS_KEY`, `sasl.password`, `session_token`, …).
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|marker| lower.contains(marker))
}

/// A secret value: `Debug` and `Display` print [`MASK`]; [`Secret::expose`] gives the
/// value to the code that must send it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Every secret value of one job, for scrubbing text that may hold one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// Adds a value (empty values and repeats are ignored).
    pub fn insert(&mut self, value: &str) {
        if !value.is_empty() && !self.0.iter().any(|known| known.expose() == value) {
            self.0.push(Secret::new(value));
            // Longest first, so a secret that contains another is masked whole.
            self.0
                .sort_by_key(|secret| std::cmp::Reverse(secret.expose().len()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every known secret, and every URL's userinfo, replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact_values(text) {
            Cow::Borrowed(text) => redact_userinfo(text),
            Cow::Owned(text) => Cow::Owned(redact_userinfo(&text).into_owned()),
        }
    }

    /// `text` with every known secret replaced by [`MASK`] (URLs' userinfo kept, for
    /// messages whose examples show where a `${NAME}` goes).
    pub fn redact_values<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut redacted = Cow::Borrowed(text);
        for secret in &self.0 {
            let value = secret.expose();
            if value.len() >= MIN_SCRUBBED_LEN && redacted.contains(value) {
                redacted = Cow::Owned(redacted.replace(value, MASK));
            }
        }
        redacted
    }
}

/// Only how many, never what.
impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} masked)", self.0.len())
    }
}

/// An options table (or function environment) for `Debug`: values whose key looks
/// secret are masked.
pub struct RedactedOptions<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            if is_secret_name(key) {
                map.entry(key, &MASK);
            } else {
                map.entry(key, &redact_userinfo(value));
            }
        }
        map.finish()
    }
}

pub use crate::text::{MAX_SHOWN_CHARS, redact_userinfo, shown};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "sasl.password",
            "session_token",
            "DB_PASSWD",
            "GCP_CREDENTIALS",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["KAFKA_BROKERS", "region", "access_key_id", "endpoint"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("wJalrXUtnFEMI");
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        let mut secrets = Secrets::default();
        secrets.insert("wJalrXUtnFEMI");
        assert_eq!(format!("{secrets:?}"), "Secrets(1 masked)");
        assert_eq!(
            secrets.redact("invalid brokers \"wJalrXUtnFEMI\""),
            "invalid brokers \"***\""
        );
    }

    #[test]
    fn userinfo_is_masked_in_free_text() {
        assert_eq!(
            redact_userinfo("writes to s3://AKIAX:abc@lake/clicks and amqp://guest@h:5672/%2f"),
            "writes to s3://***@lake/clicks and amqp://***@h:5672/%2f"
        );
        assert_eq!(redact_userinfo("s3://lake/a@b"), "s3://lake/a@b");
        assert_eq!(redact_userinfo("no url @ all"), "no url @ all");
    }

    #[test]
    fn options_mask_secret_keys() {
        let options = BTreeMap::from([
            ("region".to_owned(), "eu".to_owned()),
            ("secret_access_key".to_owned(), "wJalr".to_owned()),
        ]);
        let printed = format!("{:?}", RedactedOptions(&options));
        assert!(
            printed.contains("eu") && !printed.contains("wJalr"),
            "{printed}"
        );
    }

    #[test]
    fn long_values_are_cut() {
        let value = "x".repeat(1 << 20);
        let message = shown(&value);
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("1048576 bytes"), "{message}");
        assert_eq!(shown("short"), "\"short\"");
    }
}
