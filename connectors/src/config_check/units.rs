//! Human units in `job.toml`: durations (`30s`, `1m30s`, `500ms`), sizes (`512MiB`, `10MB`,
//! `1024`), and `${NAME}` references to the environment.
//!
//! Everything here is pure: the environment is passed in as a lookup function, so the same
//! text always expands the same way under the same lookup.

use std::time::Duration;

use bytesize::ByteSize;

/// Parses a human duration such as `30s`, `1m30s` or `500ms`.
///
/// A bare number is rejected: a unit is always required, so `30` cannot silently mean
/// seconds in one place and milliseconds in another.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "empty duration; write a number with a unit, e.g. \"30s\", \"1m30s\" or \"500ms\""
                .into(),
        );
    }
    humantime::parse_duration(text).map_err(|error| {
        let text = super::secret::shown(text);
        format!("invalid duration {text} ({error}); write a number with a unit, e.g. \"30s\", \"1m30s\" or \"500ms\"")
    })
}

/// Parses a human size such as `512MiB`, `10MB` or `1024` (bytes). Decimal units (`kB`,
/// `MB`, `GB`) are powers of 1000, binary units (`KiB`, `MiB`, `GiB`) powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let starts_with_digit = trimmed.chars().next().is_some_and(|c| c.is_ascii_digit());
    if !starts_with_digit {
        return Err(size_syntax_error(text));
    }
    let bytes = trimmed
        .parse::<ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| size_syntax_error(text))?;
    if bytes == u64::MAX {
        // The parser saturates: the size was at least this large.
        return Err(format!(
            "size {} is too large; sizes go up to 16EiB",
            super::secret::shown(text)
        ));
    }
    Ok(bytes)
}

fn size_syntax_error(text: &str) -> String {
    let text = super::secret::shown(text);
    format!(
        "invalid size {text}; write bytes as an integer or a number with a unit, e.g. \"512MiB\", \"10MB\" or 1024"
    )
}

/// Formats a byte count for messages: the largest binary unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (factor, unit) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes} bytes")
}

/// Formats a duration for messages, e.g. `15m` or `1h`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("environment variable {0} is not set; set it, or write $$ for a literal '$'")]
    MissingVariable(String),
    #[error("{0}")]
    Syntax(String),
}

/// Whether `name` is a valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `value` is exactly one environment reference, `${NAME}`, and nothing else.
pub fn is_env_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(is_env_name)
}

/// The names of the well-formed `${NAME}` references in `value` (`$$` escapes skipped).
pub fn env_references(value: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(close) = body.find('}')
        {
            let name = &body[..close];
            if is_env_name(name) {
                names.push(name);
            }
            rest = &body[close + 1..];
        } else {
            rest = after;
        }
    }
    names
}

/// Expands `${NAME}` references from `env`; `$$` stands for a literal `$`. Any other `$`
/// is an error, so a typo never passes through unexpanded.
pub fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut expanded = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        expanded.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            expanded.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or_else(|| {
                ExpandError::Syntax(
                    "unterminated ${...} reference; write ${NAME}, or $$ for a literal '$'".into(),
                )
            })?;
            let name = &body[..close];
            if !is_env_name(name) {
                let name = super::secret::shown(name);
                return Err(ExpandError::Syntax(format!(
                    "invalid environment variable name {name} in ${{...}}; names match [A-Za-z_][A-Za-z0-9_]*"
                )));
            }
            let resolved =
                env(name).ok_or_else(|| ExpandError::MissingVariable(name.to_string()))?;
            expanded.push_str(&resolved);
            rest = &body[close + 1..];
        } else {
            return Err(ExpandError::Syntax(
                "a '$' must start a ${NAME} reference; write $$ for a literal '$'".into(),
            ));
        }
    }
    expanded.push_str(rest);
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka".into()),
            "PORT" => Some("9092".into()),
            _ => None,
        }
    }

    #[test]
    fn durations_accept_compound_and_milliseconds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_accept_binary_decimal_and_plain_bytes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert!(parse_size("big").is_err());
        assert!(parse_size("-5MiB").is_err());
        assert!(parse_size("12parsecs").is_err());
        assert!(
            parse_size("99999999999999EiB").is_err(),
            "saturated, not unlimited"
        );
    }

    #[test]
    fn sizes_format_with_the_largest_exact_unit() {
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1000), "1000 bytes");
    }

    #[test]
    fn expansion_substitutes_and_escapes() {
        assert_eq!(expand_env("${HOST}:${PORT}", &env), Ok("kafka:9092".into()));
        assert_eq!(expand_env("a$$b", &env), Ok("a$b".into()));
        assert_eq!(expand_env("plain", &env), Ok("plain".into()));
        assert_eq!(expand_env("$${HOST}", &env), Ok("${HOST}".into()));
    }

    #[test]
    fn expansion_rejects_missing_and_malformed_references() {
        assert_eq!(
            expand_env("${NOPE}", &env),
            Err(ExpandError::MissingVariable("NOPE".into()))
        );
        assert!(matches!(
            expand_env("${HOST", &env),
            Err(ExpandError::Syntax(_))
        ));
        assert!(matches!(
            expand_env("${1X}", &env),
            Err(ExpandError::Syntax(_))
        ));
        assert!(matches!(
            expand_env("cost $5", &env),
            Err(ExpandError::Syntax(_))
        ));
    }

    #[test]
    fn references_are_listed() {
        assert_eq!(env_references("${A}:${B_1}$${C}x${"), ["A", "B_1"]);
        assert!(env_references("plain").is_empty());
    }

    #[test]
    fn env_reference_must_be_the_whole_value() {
        assert!(is_env_reference("${SECRET}"));
        assert!(!is_env_reference("x${SECRET}"));
        assert!(!is_env_reference("${SECRET}x"));
        assert!(!is_env_reference("hunter2"));
        assert!(!is_env_reference("${}"));
    }
}
