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
            field: field.into(),
            message: message.into(),
        }
    }
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
