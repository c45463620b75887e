//! `job.toml`: parsing, validation into [`types`], and errors that name the file and field.
//!
//! Two layers: [`raw`] mirrors the file (serde, unknown fields rejected) and [`validate`]
//! turns it into a [`JobSpec`] whose every value is checked, expanding `${NAME}` references
//! from the environment ([`units`]). A TOML or type error stops parsing at the first one;
//! validation then reports every problem it finds at once.

mod checker;
pub mod error;
pub mod raw;
pub mod types;
pub mod units;
pub mod validate;
mod validate_amqp;
mod validate_bucket;
mod validate_dead_letter;
mod validate_output;
mod validate_preload;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use error::{SpecError, SpecErrors};
pub use types::*;

use raw::RawJob;
use validate::{ValidationContext, validate};

/// The file a job folder must contain.
pub const JOB_FILE: &str = "job.toml";

/// Reads and validates `<dir>/job.toml`, expanding `${NAME}` from the process environment.
/// `dir` is made absolute; it becomes [`JobSpec::dir`].
pub fn load_job(dir: &Path) -> Result<JobSpec, SpecErrors> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let file = dir.join(JOB_FILE);
    let text = std::fs::read_to_string(&file).map_err(|error| {
        let message = match error.kind() {
            std::io::ErrorKind::NotFound => {
                format!("not found; a job folder must contain {JOB_FILE}")
            }
            _ => format!("cannot read the file: {error}"),
        };
        SpecErrors::single(SpecError::new(&file, "", message))
    })?;
    let env = |name: &str| std::env::var(name).ok();
    parse_job(&text, &file, &dir, &env)
}

/// Parses and validates the text of a job file. Pure: the environment is the `env` lookup,
/// `file` is only used in error messages, and relative output paths resolve against `dir`
/// (made absolute if it is not).
pub fn parse_job(
    text: &str,
    file: &Path,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JobSpec, SpecErrors> {
    let dir: PathBuf = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let raw = parse_raw(text, file)?;
    let context = ValidationContext {
        file,
        dir: &dir,
        env,
    };
    validate(raw, &context)
}

/// TOML text → [`RawJob`]; the error names the field path (or the position of a syntax
/// error).
fn parse_raw(text: &str, file: &Path) -> Result<RawJob, SpecErrors> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| {
        let position = error
            .span()
            .map(|span| format!(" at {}", position(text, span.start)))
            .unwrap_or_default();
        let message = format!("invalid TOML{position}: {}", error.message().trim_end());
        SpecErrors::single(SpecError::new(file, "", message))
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.inner();
        // Integer fields are `i64` in the raw structs; say so in the user's terms.
        let mut message = inner
            .message()
            .trim_end()
            .replace("expected i64", "expected an integer");
        // The path already ends with the offending key, unknown fields included.
        let field = if path == "." { String::new() } else { path };
        if let Some(span) = inner.span() {
            message.push_str(&format!(" (at {})", position(text, span.start)));
        }
        SpecErrors::single(SpecError::new(file, field, message))
    })
}

/// `line L, column C` (both from 1) of a byte offset.
fn position(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before
        .get(line_start..)
        .map_or(0, |prefix| prefix.chars().count())
        + 1;
    format!("line {line}, column {column}")
}
