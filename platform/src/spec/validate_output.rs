//! The `[output]` section: where files go (URL or local folder), the schema in declaration
//! order, partition columns, compression and file limits.

use std::time::Duration;

use super::checker::{Checker, DAY, GIB, KIB, MIB, SECOND};
use super::raw::{RawOutput, RawSchema};
use super::secret::shown;
use super::types::{Compression, Encoding, OutputSpec};
use crate::output::schema::OutputSchema;

impl Checker<'_> {
    pub(super) fn output(&mut self, raw: Option<&RawOutput>) -> Option<OutputSpec> {
        let Some(raw) = raw else {
            self.error(
                "output",
                "missing [output] table; declare at least url and schema",
            );
            return None;
        };
        let url = match &raw.url {
            None => {
                self.missing(
                    "output.url",
                    "url = \"s3://lake/clicks\" or url = \"./out\"",
                );
                None
            }
            Some(url) => self
                .expand("output.url", url)
                .and_then(|url| self.store_url("output.url", &url)),
        };
        let schema = self.schema(raw);
        let partition_by = self.partition_by(raw);
        let compression = self.choice(
            "output.compression",
            raw.compression.as_deref(),
            Compression::Zstd,
            &[
                ("zstd", Compression::Zstd),
                ("snappy", Compression::Snappy),
                ("none", Compression::None),
            ],
            &[],
        );
        let max_file_size = self
            .size(
                "output.max_file_size",
                raw.max_file_size.as_ref(),
                KIB,
                Some(64 * GIB),
            )
            .unwrap_or(128 * MIB);
        let max_file_age = self.duration(
            "output.max_file_age",
            raw.max_file_age.as_ref(),
            30 * SECOND,
            Duration::from_millis(1),
            DAY,
        );
        let options = self.options("output.options", &raw.options, true);
        Some(OutputSpec {
            url: url?,
            partition_by,
            schema: schema?,
            compression,
            max_file_size,
            max_file_age,
            options,
        })
    }

    /// Builds the schema, checking each column on its own so every bad column is reported.
    fn schema(&mut self, raw: &RawOutput) -> Option<OutputSchema> {
        let Some(schema) = &raw.schema else {
            self.missing(
                "output.schema",
                "schema = { user_id = \"int64\", ts = \"timestamp_ms\" }",
            );
            return None;
        };
        let mut valid = true;
        for declaration in &schema.0 {
            if let Err(error) = OutputSchema::from_declarations(std::slice::from_ref(declaration)) {
                self.error(format!("output.schema.{}", declaration.0), error.message);
                valid = false;
            }
        }
        if !valid {
            return None;
        }
        match OutputSchema::from_declarations(&schema.0) {
            Ok(schema) => Some(schema),
            Err(error) => {
                let field = if error.column.is_empty() {
                    "output.schema".to_string()
                } else {
                    format!("output.schema.{}", error.column)
                };
                self.error(field, error.message);
                None
            }
        }
    }

    /// `function.input_schema`: the output schema's syntax, only with `encoding = "arrow"`.
    pub(super) fn input_schema(
        &mut self,
        raw: Option<&RawSchema>,
        encoding: Encoding,
    ) -> Option<arrow_schema::SchemaRef> {
        let raw = raw?;
        if encoding != Encoding::Arrow {
            self.error(
                "function.input_schema",
                "only used with encoding = \"arrow\"; remove it or set function.encoding = \"arrow\"",
            );
            return None;
        }
        match OutputSchema::from_declarations(&raw.0) {
            Ok(schema) => Some(schema.arrow_schema()),
            Err(error) => {
                let field = if error.column.is_empty() {
                    "function.input_schema".to_string()
                } else {
                    format!("function.input_schema.{}", error.column)
                };
                self.error(field, error.message);
                None
            }
        }
    }

    fn partition_by(&mut self, raw: &RawOutput) -> Vec<String> {
        let Some(partition_by) = &raw.partition_by else {
            return Vec::new();
        };
        let declared: Vec<&str> = raw
            .schema
            .iter()
            .flat_map(|schema| schema.0.iter().map(|(name, _)| name.as_str()))
            .collect();
        let type_of = |column: &str| {
            raw.schema
                .iter()
                .flat_map(|schema| schema.0.iter())
                .find_map(|(name, declaration)| {
                    (name == column).then(|| declaration.split_whitespace().next().unwrap_or(""))
                })
        };
        let mut seen: Vec<&str> = Vec::new();
        for column in partition_by {
            if seen.contains(&column.as_str()) {
                self.error(
                    "output.partition_by",
                    format!("column {} is listed twice", shown(column)),
                );
            } else if raw.schema.is_some() && !declared.contains(&column.as_str()) {
                self.error(
                    "output.partition_by",
                    format!(
                        "column {} is not declared in output.schema; allowed: {}",
                        shown(column),
                        declared.join(", ")
                    ),
                );
            } else if let Some(kind @ ("binary" | "float32" | "float64")) = type_of(column) {
                self.error(
                    "output.partition_by",
                    format!(
                        "column {} is {kind}, which cannot name a folder (bytes are not a path; floats have no exact text); allowed: bool, integer, utf8, date32 and timestamp columns",
                        shown(column)
                    ),
                );
            }
            seen.push(column);
        }
        if !declared.is_empty() && declared.iter().all(|column| seen.contains(column)) {
            self.error(
                "output.partition_by",
                "every column is a partition column; at least one column must be left to write into the files",
            );
        }
        partition_by.clone()
    }
}
