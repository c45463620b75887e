//! Errors in a `job.toml`: each names the file, the field and what is allowed.
//!
//! These are always the user's to fix; retrying without editing the file cannot help.

use std::fmt;
use std::path::PathBuf;

/// One problem in a job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The job file (`…/job.toml`).
    pub file: PathBuf,
    /// Dotted path of the offending field, e.g. `function.timeout` or
    /// `output.schema.ts`; empty when no single field applies (a TOML syntax error, an
    /// unreadable file).
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl SpecError {
    pub fn new(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            field: cut(field.into(), MAX_FIELD_CHARS),
            message: cut(message.into(), MAX_MESSAGE_CHARS),
        }
    }
}

/// Longest field path kept in an error, in characters.
const MAX_FIELD_CHARS: usize = 200;
/// Longest message kept in an error, in characters: values are echoed cut already
/// ([`super::secret::shown`]); this bounds what a parser's message may echo.
const MAX_MESSAGE_CHARS: usize = 1000;

/// `text` cut to `max` characters, saying how much was cut.
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} bytes cut)", text.len() - kept.len())
}

/// `<file>: <field>: <message>`, or `<file>: <message>` when no field applies.
impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in a job file, in the order found. Never empty when returned as an
/// error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    pub fn single(error: SpecError) -> Self {
        Self(vec![error])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.0.iter()
    }

    /// The error naming `field`, if any.
    pub fn for_field(&self, field: &str) -> Option<&SpecError> {
        self.0.iter().find(|error| error.field == field)
    }
}

/// One error per line.
impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a SpecError;
    type IntoIter = std::slice::Iter<'a, SpecError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
