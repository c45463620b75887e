//! [`is_json`] against its reference: `from_utf8`, then serde_json ignoring the value.

use serde::de::IgnoredAny;

use super::is_json;

fn reference(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

fn agrees(bytes: &[u8]) {
    assert_eq!(
        is_json(bytes),
        reference(bytes),
        "is_json disagrees with serde_json on {:?}",
        String::from_utf8_lossy(bytes)
    );
}

const SEEDS: &[&[u8]] = &[
    br#"{"event_id":"e-000000001","user_id":1,"session_id":"s-00009e3779b1","action":"add_to_cart","url":"https://shop.example.com/products/category-1/item-1?utm_source=newsletter","amount":0.14,"ts":1764979200001}"#,
    br#"{"a": [1, 2.5, -3e10, 0.0e-0, -0, 1E+2], "b": {"c": null, "d": true, "e": false}}"#,
    br#"  {"s": "esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00 \ud800", "k\u0041": []}  "#,
    "{\"unicode\":\"h\u{e9}llo \u{2603} \u{1f600} \u{7ff} \u{800} \u{ffff} \u{10000}\"}".as_bytes(),
    b"[[[[[[[[[[{\"deep\":[[[[[]]]]]}]]]]]]]]]]",
    b"\"just a string\"",
    b"12345678901234567890123456789012345678901234567890",
    b"-0.5e-7",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
    b"{\n  \"pretty\": [\r\n    1,\n\t2\n  ]\n}\n",
    br#"{"a":1,}"#,
    br#"[1,2,]"#,
    br#"{"a" 1}"#,
    br#"{"a":01}"#,
    br#"{"a":1.}"#,
    br#"{"a":.5}"#,
    br#"{"a":1e}"#,
    br#"{"a":"\x"}"#,
    br#"{"a":"\u12G4"}"#,
    br#"{1:2}"#,
    b"[1 2]",
    b"{\"a\":\"tab\tinside\"}",
    b"nul",
    b"tru",
    b"-",
    b"",
    b"   ",
    b"{\"a\":\"\xff\"}",
    b"{\"a\":\"\xc0\x80\"}",
    b"{\"a\":\"\xed\xa0\x80\"}",
    b"{\"a\":\"\xf4\x90\x80\x80\"}",
    b"{\"a\":\"\xe2\x82\"}",
    b"[1]]",
    b"[1]x",
    b"{\"a\":1}{\"b\":2}",
];

#[test]
fn seeds_agree_with_serde_json() {
    for seed in SEEDS {
        agrees(seed);
    }
    assert!(is_json(SEEDS[0]));
    assert!(is_json(SEEDS[2]));
    assert!(!is_json(br#"{"a":1,}"#));
    assert!(
        !is_json(b"{\"a\":\"\xed\xa0\x80\"}"),
        "a UTF-8 encoded surrogate"
    );
}

#[test]
fn any_nesting_depth_and_containers_matched_past_the_bit_stack() {
    for depth in [1, 63, 64, 65, 127, 128, 129, 300] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        agrees(arrays.as_bytes());
        assert!(is_json(arrays.as_bytes()), "depth {depth}");
        let objects = format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth));
        agrees(objects.as_bytes());
        assert!(is_json(objects.as_bytes()), "depth {depth}");
        // Alternating containers, and a mismatched closer at the innermost level.
        let mixed: String = (0..depth)
            .map(|level| if level % 2 == 0 { "[" } else { "{\"k\":" })
            .collect();
        let closers: String = (0..depth)
            .rev()
            .map(|level| if level % 2 == 0 { "]" } else { "}" })
            .collect();
        let good = format!("{mixed}0{closers}");
        agrees(good.as_bytes());
        assert!(is_json(good.as_bytes()), "depth {depth}");
        let mut swapped = closers.into_bytes();
        swapped[0] = if swapped[0] == b']' { b'}' } else { b']' };
        let bad = [mixed.as_bytes(), b"0", &swapped].concat();
        agrees(&bad);
        assert!(!is_json(&bad), "depth {depth}");
    }
}

/// A small deterministic generator (xorshift), so a failure is reproducible.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Bytes that matter to the grammar, to UTF-8, or to the eight-byte string scan.
const INTERESTING: &[u8] = b"{}[]\":,\\/ \t\n\r0123456789.eE+-truefalsnbux\x00\x01\x1f\x7f\x80\xbf\xc2\xc3\xa9\xe0\xe2\x82\xac\xed\xa0\xef\xf0\x9f\xf4\x90\xff";

#[test]
fn mutated_documents_agree_with_serde_json() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for round in 0..40_000 {
        let mut bytes = SEEDS[round % SEEDS.len()].to_vec();
        for _ in 0..=random.below(4) {
            let at = random.below(bytes.len() + 1);
            match random.below(5) {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => bytes[at] = INTERESTING[random.below(INTERESTING.len())],
                2 => bytes.insert(at, INTERESTING[random.below(INTERESTING.len())]),
                3 => bytes.truncate(at),
                _ => {
                    // Repeat a piece, to grow nesting and long strings.
                    let end = (at + random.below(16)).min(bytes.len());
                    let piece = bytes[at..end].to_vec();
                    bytes.splice(at..at, piece);
                }
            }
        }
        agrees(&bytes);
    }
}

#[test]
fn every_split_of_a_string_around_the_eight_byte_scan_agrees() {
    // Specials at every offset relative to the eight-byte chunks of a string.
    for special in [
        &b"\""[..],
        b"\\n",
        b"\x01",
        b"\xc3\xa9",
        b"\xff",
        b"\\u00e9",
        b"\x7f",
    ] {
        for offset in 0..20 {
            let mut bytes = b"{\"s\":\"".to_vec();
            bytes.extend(std::iter::repeat_n(b'a', offset));
            bytes.extend_from_slice(special);
            bytes.extend(std::iter::repeat_n(b'b', 19 - offset));
            bytes.extend_from_slice(b"\"}");
            agrees(&bytes);
        }
    }
}
