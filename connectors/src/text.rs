//! How a value from a job's configuration appears in a message.

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
