//! Values of configuration tables as written, for the serde structs that mirror a file:
//! durations and sizes kept as text until they are checked, integers that saturate
//! instead of failing, and option tables flattened into dotted keys. Nothing here is
//! validated beyond TOML types; the checks in [`super::Checker`] do that.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A duration as written, e.g. `"30s"`; parsed during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"1m30s\" or \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(value.to_string()))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A size as written: an integer number of bytes or a string such as `"512MiB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\", \"10MB\" or an integer number of bytes")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_i128<E: de::Error>(self, value: i128) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(saturate(value)))
            }
            fn visit_u128<E: de::Error>(self, value: u128) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(value.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// An integer field: a number beyond `i64` becomes `i64::MAX` (or `MIN`), so validation
/// reports it against the field's own range like any other out-of-range value.
pub fn saturating_integer<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    struct IntegerVisitor;
    impl Visitor<'_> for IntegerVisitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }
        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            Ok(i64::try_from(value).unwrap_or(i64::MAX))
        }
        fn visit_i128<E: de::Error>(self, value: i128) -> Result<i64, E> {
            Ok(saturate(value))
        }
        fn visit_u128<E: de::Error>(self, value: u128) -> Result<i64, E> {
            Ok(i64::try_from(value).unwrap_or(i64::MAX))
        }
    }
    deserializer.deserialize_any(IntegerVisitor).map(Some)
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// A string → string table, in file order. Numbers and booleans are accepted as text, and
/// nested tables are flattened into dotted keys, so `sasl.mechanism = "PLAIN"` (unquoted)
/// means the key `sasl.mechanism`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOptions(pub Vec<(String, String)>);

/// One value in an options table before flattening.
enum OptionNode {
    Leaf(String),
    Table(Vec<(String, OptionNode)>),
}

impl<'de> Deserialize<'de> for OptionNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = OptionNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<OptionNode, E> {
                Ok(OptionNode::Leaf(value.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OptionNode, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, OptionNode>()? {
                    entries.push((key, value));
                }
                Ok(OptionNode::Table(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

fn flatten_into<E: de::Error>(
    prefix: &str,
    entries: Vec<(String, OptionNode)>,
    out: &mut Vec<(String, String)>,
) -> Result<(), E> {
    for (key, node) in entries {
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match node {
            OptionNode::Leaf(value) => {
                if out.iter().any(|(existing, _)| *existing == key) {
                    return Err(E::custom(format!("option `{key}` is given twice")));
                }
                out.push((key, value));
            }
            OptionNode::Table(nested) => flatten_into(&key, nested, out)?,
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for RawOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OptionsVisitor;
        impl<'de> Visitor<'de> for OptionsVisitor {
            type Value = RawOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawOptions, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, OptionNode>()? {
                    entries.push((key, value));
                }
                let mut flat = Vec::new();
                flatten_into::<A::Error>("", entries, &mut flat)?;
                Ok(RawOptions(flat))
            }
        }
        deserializer.deserialize_map(OptionsVisitor)
    }
}
