//! Whether a payload is one JSON value in UTF-8, decided in a single pass over its bytes.
//!
//! The batch encoder asks this of every record it passes through verbatim, so it is on
//! the data path: it allocates nothing (nesting is tracked in a bit stack that only
//! spills to the heap past 64 levels) and skips over string contents eight bytes at a
//! time. UTF-8 is checked in the same pass: outside strings JSON is ASCII, and inside
//! them only bytes at or above 0x80 need decoding.
//!
//! It accepts exactly what `std::str::from_utf8` followed by
//! `serde_json::from_str::<serde::de::IgnoredAny>` accepts (RFC 8259 JSON with
//! whitespace around it, any nesting depth, `\u` escapes not checked for surrogate
//! pairs); the tests hold it to that.

/// True when `bytes` is UTF-8 and one JSON value, optionally surrounded by whitespace.
pub(crate) fn is_json(bytes: &[u8]) -> bool {
    let mut scanner = Scanner {
        bytes,
        at: 0,
        nesting: Nesting::default(),
    };
    scanner.document().is_some()
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    nesting: Nesting,
}

impl Scanner<'_> {
    /// `None` as soon as the text stops being JSON.
    fn document(&mut self) -> Option<()> {
        loop {
            self.skip_whitespace();
            match self.next()? {
                b'{' => {
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                    } else {
                        self.nesting.push(Container::Object);
                        self.key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                    } else {
                        self.nesting.push(Container::Array);
                        continue;
                    }
                }
                b'"' => self.string()?,
                b't' => self.literal(b"rue")?,
                b'f' => self.literal(b"alse")?,
                b'n' => self.literal(b"ull")?,
                b'-' => self.number(self.peek()?)?,
                first @ b'0'..=b'9' => self.number_after(first)?,
                _ => return None,
            }
            // A value ended: close containers until one expects another value.
            loop {
                self.skip_whitespace();
                let Some(container) = self.nesting.top() else {
                    return (self.at == self.bytes.len()).then_some(());
                };
                match (self.next()?, container) {
                    (b',', Container::Object) => {
                        self.skip_whitespace();
                        self.key()?;
                        break;
                    }
                    (b',', Container::Array) => break,
                    (b'}', Container::Object) | (b']', Container::Array) => self.nesting.pop(),
                    _ => return None,
                }
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// An object key and its colon; whitespace before it is already skipped.
    fn key(&mut self) -> Option<()> {
        (self.next()? == b'"').then_some(())?;
        self.string()?;
        self.skip_whitespace();
        (self.next()? == b':').then_some(())
    }

    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        let end = self.at.checked_add(rest.len())?;
        (self.bytes.get(self.at..end)? == rest).then_some(())?;
        self.at = end;
        Some(())
    }

    /// A number after its `-`; `first` is the byte after the sign.
    fn number(&mut self, first: u8) -> Option<()> {
        self.at += 1;
        first.is_ascii_digit().then_some(())?;
        self.number_after(first)
    }

    /// The rest of a number whose first digit, `first`, is consumed.
    fn number_after(&mut self, first: u8) -> Option<()> {
        if first == b'0' {
            // No leading zeros: `0` stands alone.
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
        } else {
            self.digits();
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            (self.digits() > 0).then_some(())?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            (self.digits() > 0).then_some(())?;
        }
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    /// The rest of a string after its opening quote, through the closing one.
    fn string(&mut self) -> Option<()> {
        loop {
            self.skip_plain_string_bytes();
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        let end = self.at.checked_add(4)?;
                        let hex = self.bytes.get(self.at..end)?;
                        hex.iter().all(u8::is_ascii_hexdigit).then_some(())?;
                        self.at = end;
                    }
                    _ => return None,
                },
                lead @ 0x80.. => self.utf8_tail(lead)?,
                // A raw control character.
                _ => return None,
            }
        }
    }

    /// Skips string bytes that need no look: ASCII other than `"`, `\` and controls.
    fn skip_plain_string_bytes(&mut self) {
        const ONES: u64 = u64::MAX / 255;
        const HIGH: u64 = ONES << 7;
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let chars = u64::from_le_bytes(word);
            // The high bit of a byte is set below where that byte is a control
            // character, `"`, `\` or not ASCII (the classic "has a byte less than n"
            // trick). A borrow can also flag a plain byte, but only above a byte that
            // is flagged rightly, so the lowest flag is exact: the scan jumps to it.
            let control = chars.wrapping_sub(ONES * 0x20) & !chars;
            let quote = chars ^ (ONES * u64::from(b'"'));
            let quote = quote.wrapping_sub(ONES) & !quote;
            let backslash = chars ^ (ONES * u64::from(b'\\'));
            let backslash = backslash.wrapping_sub(ONES) & !backslash;
            let flags = (control | quote | backslash | chars) & HIGH;
            if flags != 0 {
                self.at += (flags.trailing_zeros() / 8) as usize;
                return;
            }
            self.at += 8;
        }
        while let Some(byte) = self.peek() {
            if !(0x20..0x80).contains(&byte) || byte == b'"' || byte == b'\\' {
                return;
            }
            self.at += 1;
        }
    }

    /// The continuation bytes of a UTF-8 sequence whose lead byte is consumed.
    fn utf8_tail(&mut self, lead: u8) -> Option<()> {
        let width = match lead {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return None,
        };
        let start = self.at - 1;
        let sequence = self.bytes.get(start..start + width)?;
        std::str::from_utf8(sequence).ok()?;
        self.at = start + width;
        Some(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// The open containers, innermost last: a bit per level in `bits` for the first 64
/// levels, deeper ones in `deeper` (allocated only when a payload nests that far).
#[derive(Default)]
struct Nesting {
    depth: usize,
    bits: u64,
    deeper: Vec<Container>,
}

impl Nesting {
    fn push(&mut self, container: Container) {
        if self.depth < 64 {
            let bit = 1_u64 << self.depth;
            match container {
                Container::Object => self.bits |= bit,
                Container::Array => self.bits &= !bit,
            }
        } else {
            self.deeper.push(container);
        }
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        if self.depth >= 64 {
            self.deeper.pop();
        }
    }

    fn top(&self) -> Option<Container> {
        let level = self.depth.checked_sub(1)?;
        if level >= 64 {
            return self.deeper.last().copied();
        }
        Some(if self.bits & (1 << level) != 0 {
            Container::Object
        } else {
            Container::Array
        })
    }
}

#[cfg(test)]
#[path = "tests/json_check.rs"]
mod tests;
