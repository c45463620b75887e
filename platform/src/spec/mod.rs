//! `job.toml`: parsing, validation into [`types`], and errors that name the file and field.
//!
//! Two layers: [`raw`] mirrors the file (serde, unknown fields rejected) and [`validate`]
//! turns it into a [`JobSpec`] whose every value is checked, expanding `${NAME}` references
//! from the environment ([`units`]). Every problem is reported at once: TOML type errors
//! and unknown fields together with validation's findings. Secrets are never shown
//! ([`secret`]).
//!
//! The tables of triggers and dead-letter brokers belong to their connectors: the
//! registry in `sluice_connectors::registry` lists the kinds, each connector's serde
//! struct reads its `[trigger.<kind>]` / `[dead_letter.<kind>]` table and its checks turn
//! it into the connector's configuration. This folder names no connector. The field
//! checks, errors, units and secrets are the shared kit, `sluice_connectors::config_check`
//! (re-exported here as [`error`], [`units`] and [`secret`]).

mod checker;
pub mod raw;
pub mod types;
pub mod validate;
mod validate_dead_letter;
mod validate_output;
mod validate_preload;
mod validate_program;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use sluice_connectors::config_check::{error, secret, units};

pub use error::{SpecError, SpecErrors};
pub use types::*;

use raw::RawJob;
use validate::{ValidationContext, validate};

/// The file a job folder must contain.
pub const JOB_FILE: &str = "job.toml";

/// Reads and validates `<dir>/job.toml`, expanding `${NAME}` from the process environment.
/// `dir` is made absolute; it becomes [`JobSpec::dir`]. A path to the job file itself
/// (`<dir>/job.toml`) is accepted too and means its folder.
pub fn load_job(dir: &Path) -> Result<JobSpec, SpecErrors> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = match dir.parent() {
        Some(parent) if dir.file_name() == Some(JOB_FILE.as_ref()) && dir.is_file() => {
            parent.to_path_buf()
        }
        _ => dir,
    };
    let file = dir.join(JOB_FILE);
    let bytes = std::fs::read(&file).map_err(|error| {
        let message = match error.kind() {
            std::io::ErrorKind::NotFound => {
                format!("not found; a job folder must contain {JOB_FILE}")
            }
            _ => format!("cannot read the file: {error}"),
        };
        SpecErrors::single(SpecError::new(&file, "", message))
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|error| {
        let valid = bytes.get(..error.valid_up_to()).unwrap_or_default();
        let before = String::from_utf8_lossy(valid);
        let message = format!(
            "not UTF-8 text: invalid byte at {} (byte offset {}); TOML files are UTF-8",
            position(&before, before.len()),
            error.valid_up_to()
        );
        SpecErrors::single(SpecError::new(&file, "", message))
    })?;
    let env = |name: &str| std::env::var(name).ok();
    parse_job(text, &file, &dir, &env)
}

/// Parses and validates the text of a job file. Pure: the environment is the `env` lookup,
/// `file` is only used in error messages, and relative output paths resolve against `dir`
/// (made absolute if it is not).
///
/// Every problem is reported at once: TOML type errors and unknown fields are collected
/// (each offending field is set aside and parsing goes on), then the rest of the file is
/// validated; a field already reported is not reported again as missing.
pub fn parse_job(
    text: &str,
    file: &Path,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JobSpec, SpecErrors> {
    let dir: PathBuf = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let (raw, mut errors) = parse_raw(text, file)?;
    let context = ValidationContext {
        file,
        dir: &dir,
        env,
    };
    match validate(raw, &context) {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(SpecErrors(errors)),
        Err(SpecErrors(more)) => {
            let reported: Vec<String> = errors.iter().map(|error| error.field.clone()).collect();
            errors.extend(more.into_iter().filter(|error| {
                !reported
                    .iter()
                    .any(|field| !field.is_empty() && is_within(&error.field, field))
            }));
            Err(SpecErrors(errors))
        }
    }
}

/// Whether `field` is `parent` or inside it (`output.schema.ts` is within `output.schema`).
fn is_within(field: &str, parent: &str) -> bool {
    field
        .strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Most type errors and unknown fields collected from one file.
const MAX_TYPE_ERRORS: usize = 64;

/// TOML text → [`RawJob`] plus the type errors and unknown fields found on the way, each
/// naming the field path and its position. A syntax error stops here (every one found is
/// reported).
fn parse_raw(text: &str, file: &Path) -> Result<(RawJob, Vec<SpecError>), SpecErrors> {
    let (mut table, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let errors = syntax_errors
            .iter()
            .take(MAX_TYPE_ERRORS)
            .map(|error| {
                let position = error
                    .span()
                    .map(|span| format!(" at {}", position(text, span.start)))
                    .unwrap_or_default();
                let mut message = format!("invalid TOML{position}: {}", error.message().trim_end());
                // Name the key: the parser's message does not.
                if message.ends_with("duplicate key")
                    && let Some(key) = error.span().and_then(|span| text.get(span))
                {
                    message.push_str(&format!(" {}", secret::shown(key.trim())));
                }
                SpecError::new(file, "", message)
            })
            .collect();
        return Err(SpecErrors(errors));
    }
    let mut errors = Vec::new();
    loop {
        let deserializer = toml::de::Deserializer::from(table.clone());
        let error = match serde_path_to_error::deserialize::<_, RawJob>(deserializer) {
            Ok(raw) => return Ok((raw, errors)),
            Err(error) => error,
        };
        let segments: Vec<String> = error
            .path()
            .iter()
            .map_while(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let inner = error.inner();
        let mut message = type_error_message(inner.message());
        if let Some(span) = inner.span() {
            message.push_str(&format!(" (at {})", position(text, span.start)));
        }
        // The path ends with the offending key, unknown fields included; a list element's
        // error is reported on the list.
        let field = segments.join(".");
        let removed = remove_path(table.get_mut(), &segments);
        errors.push(SpecError::new(file, field, message));
        if !removed || errors.len() >= MAX_TYPE_ERRORS {
            return Err(SpecErrors(errors));
        }
    }
}

/// A serde/TOML type error in the user's terms: integer fields are `i64` in the raw
/// structs.
fn type_error_message(message: &str) -> String {
    message
        .trim_end()
        .replace("expected i64", "expected an integer")
}

/// Removes the value at `path` (table keys) so parsing can go on past it; false when
/// there is nothing to remove (the error is about the whole file).
fn remove_path(table: &mut toml::de::DeTable<'_>, path: &[String]) -> bool {
    match path {
        [] => false,
        [key] => table.remove(key.as_str()).is_some(),
        [key, rest @ ..] => match table.get_mut(key.as_str()).map(|value| value.get_mut()) {
            Some(toml::de::DeValue::Table(inner)) => remove_path(inner, rest),
            _ => table.remove(key.as_str()).is_some(),
        },
    }
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
