//! JSON scalars as the strict column decoders of [`super::decode`] see them, and the
//! conversions from them into each column type's native value. Every conversion returns
//! `None` for a value the column does not accept; the caller turns that into an error that
//! names the row and column.

use arrow_array::timezone::Tz;
use arrow_array::types::Date32Type;
use arrow_cast::parse::{Parser, string_to_datetime};
use arrow_json::reader::{Tape, TapeElement};
use arrow_schema::TimeUnit;

/// One JSON value on the tape, as much of it as the column decoders need.
pub(super) enum JsonValue<'a> {
    Null,
    Bool(bool),
    /// The number's text, as written.
    Number(&'a str),
    Int(i64),
    Float(f64),
    String(&'a str),
    Object,
    List,
}

impl<'a> JsonValue<'a> {
    pub(super) fn read(tape: &Tape<'a>, p: u32) -> Self {
        match tape.get(p) {
            TapeElement::Null => Self::Null,
            TapeElement::True => Self::Bool(true),
            TapeElement::False => Self::Bool(false),
            TapeElement::String(idx) => Self::String(tape.get_string(idx)),
            TapeElement::Number(idx) => Self::Number(tape.get_string(idx)),
            TapeElement::I32(v) => Self::Int(i64::from(v)),
            TapeElement::I64(high) => match tape.get(p + 1) {
                TapeElement::I32(low) => Self::Int((i64::from(high) << 32) | i64::from(low as u32)),
                _ => Self::Object,
            },
            TapeElement::F32(v) => Self::Float(f64::from(f32::from_bits(v))),
            TapeElement::F64(high) => match tape.get(p + 1) {
                TapeElement::F32(low) => {
                    Self::Float(f64::from_bits((u64::from(high) << 32) | u64::from(low)))
                }
                _ => Self::Object,
            },
            TapeElement::StartList(_) | TapeElement::EndList(_) => Self::List,
            _ => Self::Object,
        }
    }

    /// The value as shown in an error: JSON text, strings cut to a readable length.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Null => "null".into(),
            Self::Bool(b) => b.to_string(),
            Self::Number(text) => shorten(text),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::String(s) => {
                let quoted = serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
                shorten(&quoted)
            }
            Self::Object => "an object".into(),
            Self::List => "a list".into(),
        }
    }
}

pub(super) fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Integral numbers only: `3`, `3.0` and `3e2` are integers, `3.5` is not, and neither is
/// a string (`"3"`): no value is silently changed into another type. The number's text is
/// read exactly, so a number outside the `i64` range is refused, never rounded or clamped.
pub(super) fn to_integer(value: &JsonValue<'_>) -> Option<i64> {
    match value {
        JsonValue::Int(i) => Some(*i),
        JsonValue::Number(text) => exact_integer(text),
        JsonValue::Float(f) => integral_f64(*f),
        _ => None,
    }
}

/// The JSON number `text` as an `i64` when it is exactly an integer in range: `-12`,
/// `1.50e2`, `120e-1` are; `1.5`, `9223372036854775808` and malformed text are not.
fn exact_integer(text: &str) -> Option<i64> {
    plain_integer(text.as_bytes()).or_else(|| general_integer(text))
}

/// The common case without allocating: an optional `-` and at most 18 digits, which
/// always fit an `i64`. `None` sends anything else (fractions, exponents, 19 digits or
/// more) to [`general_integer`].
fn plain_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut magnitude: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude * 10 + i64::from(digit - b'0');
    }
    Some(if negative { -magnitude } else { magnitude })
}

fn general_integer(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    let exponent: i64 = match exponent {
        Some(e) => {
            let e = e.strip_prefix('+').unwrap_or(e);
            let unsigned_e = e.strip_prefix('-').unwrap_or(e);
            if unsigned_e.is_empty() || !all_digits(unsigned_e) {
                return None;
            }
            // Longer exponents are far outside the range either way.
            if unsigned_e.trim_start_matches('0').len() > 6 {
                return None;
            }
            e.parse().ok()?
        }
        None => 0,
    };
    // value = digits × 10^scale
    let mut scale = exponent - fraction.len() as i64;
    let mut digits = digits;
    while scale < 0 && digits.ends_with('0') {
        digits = &digits[..digits.len() - 1];
        scale += 1;
    }
    if scale < 0 || digits.len() as i64 + scale > 19 {
        return None;
    }
    let magnitude = digits
        .parse::<i128>()
        .ok()?
        .checked_mul(10_i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

pub(super) fn integral_f64(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every integral f64 in [-2^63, 2^63) fits in i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

pub(super) fn to_f64(value: &JsonValue<'_>) -> Option<f64> {
    match value {
        JsonValue::Int(i) => Some(*i as f64),
        JsonValue::Float(f) => Some(*f),
        JsonValue::Number(text) => text.parse::<f64>().ok().filter(|f| f.is_finite()),
        JsonValue::String(s) => special_float(s),
        _ => None,
    }
}

pub(super) fn to_f32(value: &JsonValue<'_>) -> Option<f32> {
    match value {
        JsonValue::Number(text) => text.parse::<f32>().ok().filter(|f| f.is_finite()),
        JsonValue::String(s) => special_float(s).map(|f| f as f32),
        other => to_f64(other).map(|f| f as f32).filter(|f| f.is_finite()),
    }
}

pub(super) fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// `"YYYY-MM-DD"` exactly, or an integer number of days since 1970-01-01; years 1 to
/// 9999 only, what every Parquet reader accepts.
pub(super) fn to_date32(value: &JsonValue<'_>) -> Option<i32> {
    let days = match value {
        JsonValue::String(s) => {
            let b = s.as_bytes();
            let shaped = b.len() == 10
                && b[4] == b'-'
                && b[7] == b'-'
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
            if shaped { Date32Type::parse(s) } else { None }
        }
        JsonValue::Bool(_) => None,
        other => to_integer_number(other).and_then(|i| i32::try_from(i).ok()),
    }?;
    (FIRST_DAY..=LAST_DAY).contains(&days).then_some(days)
}

/// 0001-01-01 and 9999-12-31 in days since 1970-01-01.
const FIRST_DAY: i32 = -719_162;
const LAST_DAY: i32 = 2_932_896;
/// 0001-01-01T00:00:00Z and the second after 9999-12-31T23:59:59Z, in seconds.
const FIRST_SECOND: i64 = -62_135_596_800;
const END_SECOND: i64 = 253_402_300_800;

/// An RFC 3339 string (a missing offset means UTC) or an integer in `unit` since the
/// epoch; years 1 to 9999 only, what every Parquet reader accepts.
pub(super) fn to_timestamp(value: &JsonValue<'_>, utc: &Tz, unit: TimeUnit) -> Option<i64> {
    let timestamp = match value {
        JsonValue::String(s) => {
            let datetime = string_to_datetime(utc, s).ok()?;
            match unit {
                TimeUnit::Millisecond => Some(datetime.timestamp_millis()),
                TimeUnit::Microsecond => Some(datetime.timestamp_micros()),
                TimeUnit::Second => Some(datetime.timestamp()),
                TimeUnit::Nanosecond => datetime.timestamp_nanos_opt(),
            }
        }
        other => to_integer_number(other),
    }?;
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let first = FIRST_SECOND.saturating_mul(per_second);
    let end = END_SECOND.saturating_mul(per_second);
    (first..end).contains(&timestamp).then_some(timestamp)
}

/// Like [`to_integer`] but for numbers only: a string here is a date or time and was
/// handled by the caller.
pub(super) fn to_integer_number(value: &JsonValue<'_>) -> Option<i64> {
    match value {
        JsonValue::String(_) => None,
        other => to_integer(other),
    }
}
