//! Generated output rows against every column type: many random batches, some valid,
//! most hostile (wrong types, numbers and dates at and past their limits, broken JSON,
//! stray bytes), decoded within a bounded time. Decoding must never panic, must give
//! exactly the rows counted, and an error must name the first row that fails on its own.
//!
//! A small deterministic generator (xorshift, fixed seeds) keeps failures reproducible
//! without a dependency; each failure prints its seed and input.

use std::time::{Duration, Instant};

use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len())]
    }
}

const COLUMNS: &[(&str, &str)] = &[
    ("b", "bool"),
    ("i32", "int32"),
    ("i64", "int64 not null"),
    ("f32", "float32"),
    ("f64", "float64"),
    ("s", "utf8"),
    ("bin", "binary"),
    ("d", "date32"),
    ("ms", "timestamp_ms"),
    ("us", "timestamp_us"),
];

fn schema() -> OutputSchema {
    let decls: Vec<(String, String)> = COLUMNS
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    OutputSchema::from_declarations(&decls).unwrap()
}

/// A JSON value, often one a column should accept, often one it should not.
fn value(rng: &mut Rng, depth: usize) -> String {
    match rng.below(14) {
        0 => rng
            .pick(&[
                "null", "true", "false", "0", "-0", "1", "-1", "3.0", "2e3", "1.5",
            ])
            .into(),
        1 => (rng.next() as i64).to_string(),
        2 => (rng.next() as i32).to_string(),
        3 => rng
            .pick(&[
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "2147483648",
                "-2147483649",
                "1e19",
                "1e400",
                "-1e400",
                "4.9e-324",
                "3.4028235e38",
                "3.5e38",
                "123456789012345678901234567890",
                "0.1e1",
                "1E+2",
                "-0.0e-0",
            ])
            .into(),
        4 => format!(
            "{}.{}e{}",
            rng.next() % 1000,
            rng.next() % 1000,
            rng.below(40) as i64 - 20
        ),
        5 => rng
            .pick(&[
                r#""2024-02-29""#,
                r#""0001-01-01""#,
                r#""9999-12-31""#,
                r#""0000-12-31""#,
                r#""2024-13-01""#,
                r#""2024-1-1""#,
                r#""2024-01-01T00:00:00Z""#,
                r#""9999-12-31T23:59:59.999999Z""#,
                r#""+10000-01-01T00:00:00Z""#,
                r#""-0001-01-01T00:00:00Z""#,
                r#""2024-01-01 10:00:00+05:30""#,
                r#""yesterday""#,
            ])
            .into(),
        6 => rng
            .pick(&[
                r#""NaN""#,
                r#""Infinity""#,
                r#""-Infinity""#,
                r#""9""#,
                r#""-9223372036854775809""#,
            ])
            .into(),
        7 => rng
            .pick(&[
                r#""AAEC/w==""#,
                r#""AAEC_w""#,
                r#""not base64!""#,
                r#""""#,
                r#""=""#,
            ])
            .into(),
        8 => {
            let chars = [
                "a", "é", "\\u0000", "\\n", "\\\"", "😀", "\\ud800", "\\uDC00", "/",
            ];
            let text: String = (0..rng.below(12)).map(|_| rng.pick(&chars)).collect();
            format!("\"{text}\"")
        }
        9 if depth < 4 => {
            let items: Vec<String> = (0..rng.below(4)).map(|_| value(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        10 if depth < 4 => {
            let fields: Vec<String> = (0..rng.below(4))
                .map(|i| format!("\"k{i}\":{}", value(rng, depth + 1)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        11 => ((rng.next() % 6_000_000) as i64 - 3_000_000).to_string(),
        12 => ((rng.next() % 600_000_000_000_000) as i64 - 300_000_000_000_000).to_string(),
        _ => "null".into(),
    }
}

/// A value `decl` accepts.
fn valid_value(rng: &mut Rng, decl: &str) -> String {
    let int = rng.next() as i64;
    match decl.split(' ').next().unwrap_or_default() {
        "bool" => rng.pick(&["true", "false"]).into(),
        "int32" => (int as i32).to_string(),
        "int64" => rng
            .pick(&[
                &int.to_string(),
                "9223372036854775807",
                "-9223372036854775808",
                "1e3",
            ])
            .to_owned(),
        "float32" | "float64" => rng.pick(&["1.5", "-0.25e3", "\"NaN\"", "7"]).into(),
        "utf8" => rng.pick(&["\"\"", "\"héllo\"", "\"a\\u0000b\""]).into(),
        "binary" => rng.pick(&["\"AAEC/w==\"", "\"AAEC_w\"", "\"\""]).into(),
        "date32" => rng
            .pick(&[
                "\"2024-02-29\"",
                "\"0001-01-01\"",
                "\"9999-12-31\"",
                "19782",
            ])
            .into(),
        _ => rng
            .pick(&[
                "\"2024-01-01T00:00:00Z\"",
                "\"9999-12-31T23:59:59.999Z\"",
                "0",
                "-1",
            ])
            .into(),
    }
}

/// One output line: an object with some declared columns (maybe repeated), some
/// undeclared ones, and sometimes damage; or, as often, a line that fits the schema.
fn line(rng: &mut Rng) -> Vec<u8> {
    if rng.below(2) == 0 {
        let mut fields = Vec::new();
        for (name, decl) in COLUMNS {
            if decl.ends_with("not null") || rng.below(3) > 0 {
                fields.push(format!("\"{name}\":{}", valid_value(rng, decl)));
            }
        }
        return format!("{{{}}}", fields.join(",")).into_bytes();
    }
    let mut fields = Vec::new();
    for (name, _) in COLUMNS {
        if rng.below(4) > 0 {
            fields.push(format!("\"{name}\":{}", value(rng, 0)));
        }
    }
    if rng.below(4) == 0 {
        fields.push(format!("\"extra\":{}", value(rng, 0)));
    }
    if rng.below(10) == 0 && !fields.is_empty() {
        let again = fields[rng.below(fields.len())].clone();
        fields.push(again);
    }
    let mut bytes = format!("{{{}}}", fields.join(",")).into_bytes();
    match rng.below(12) {
        0 if !bytes.is_empty() => {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        1 if !bytes.is_empty() => {
            let at = rng.below(bytes.len());
            bytes[at] = [b'\0', b'\xff', b'"', b'}', b',', b' ', b'['][rng.below(7)];
        }
        2 => bytes = value(rng, 0).into_bytes(),
        _ => {}
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bytes = b"{}".to_vec();
    }
    bytes.retain(|b| *b != b'\n');
    bytes
}

fn decode_one(schema: &OutputSchema, line: &[u8]) -> Result<RecordBatch, DecodeError> {
    let mut text = line.to_vec();
    text.push(b'\n');
    decode_rows(schema, &text, 1)
}

#[test]
fn generated_rows_never_panic_and_errors_name_the_first_failing_row() {
    let schema = schema();
    let started = Instant::now();
    let (mut accepted, mut refused) = (0, 0);
    for (batches, seed) in (1..=u64::MAX).enumerate() {
        if started.elapsed() > Duration::from_secs(4) && batches >= 300 {
            break;
        }
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let lines: Vec<Vec<u8>> = (0..1 + rng.below(6)).map(|_| line(&mut rng)).collect();
        let mut text = Vec::new();
        for line in &lines {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        let alone: Vec<bool> = lines
            .iter()
            .map(|l| decode_one(&schema, l).is_ok())
            .collect();
        let shown = || String::from_utf8_lossy(&text).into_owned();
        match decode_rows(&schema, &text, lines.len()) {
            Ok(batch) => {
                accepted += 1;
                assert_eq!(batch.num_rows(), lines.len(), "seed {seed}: {}", shown());
                assert!(alone.iter().all(|ok| *ok), "seed {seed}: {}", shown());
            }
            Err(error) => {
                refused += 1;
                assert!(error.row < lines.len(), "seed {seed}: {error}: {}", shown());
                let first_bad = alone.iter().position(|ok| !ok);
                assert_eq!(
                    Some(error.row),
                    first_bad,
                    "seed {seed}: {error}: {}",
                    shown()
                );
            }
        }
    }
    // The generator must exercise both outcomes, or the test proves little.
    assert!(
        accepted > 10 && refused > 10,
        "{accepted} accepted, {refused} refused"
    );
}
