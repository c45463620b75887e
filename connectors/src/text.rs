//! How a value from a job's configuration appears in a message.

use std::borrow::Cow;

/// What a hidden value is replaced with.
pub const MASK: &str = "***";

/// Most characters of a value echoed in a message.
pub const MAX_SHOWN_CHARS: usize = 80;

/// A value for a message: quoted, and cut to [`MAX_SHOWN_CHARS`] characters with the
/// full length said, so a huge value never makes a huge message.
pub fn shown(value: &str) -> String {
    let count = value.chars().count();
    if count <= MAX_SHOWN_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_SHOWN_CHARS).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

/// Replaces the userinfo of every `scheme://user:password@host` in `text` with [`MASK`]
/// (`s3://***@bucket/prefix`): the user part of a URL is often an access key id.
pub fn redact_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let authority_start = start + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(MASK);
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}
