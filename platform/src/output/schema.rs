//! The job's output schema: column declarations from `job.toml`, and their Arrow form.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// A column type a job may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    Utf8,
    Binary,
    Date32,
    TimestampMs,
    TimestampUs,
}

impl ColumnType {
    /// Every accepted type name, as shown in errors.
    pub const NAMES: &'static [&'static str] = &[
        "bool",
        "int32",
        "int64",
        "float32",
        "float64",
        "utf8",
        "binary",
        "date32",
        "timestamp_ms",
        "timestamp_us",
    ];

    /// Parses a type name; `string` is accepted for `utf8`, `boolean` for `bool`,
    /// `date` for `date32`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "bool" | "boolean" => Self::Bool,
            "int32" => Self::Int32,
            "int64" => Self::Int64,
            "float32" => Self::Float32,
            "float64" => Self::Float64,
            "utf8" | "string" => Self::Utf8,
            "binary" => Self::Binary,
            "date32" | "date" => Self::Date32,
            "timestamp_ms" => Self::TimestampMs,
            "timestamp_us" => Self::TimestampUs,
            _ => return None,
        })
    }

    /// The Arrow type. Timestamps are UTC-adjusted, never nanoseconds.
    pub fn arrow_type(self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Utf8 => DataType::Utf8,
            Self::Binary => DataType::Binary,
            Self::Date32 => DataType::Date32,
            Self::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Self::TimestampUs => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// A declaration that could not be accepted: which column, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column:?}: {message}")]
pub struct SchemaDeclError {
    pub column: String,
    pub message: String,
}

/// The validated output schema, in declaration order.
#[derive(Debug, Clone)]
pub struct OutputSchema {
    columns: Vec<Column>,
    arrow: SchemaRef,
}

impl OutputSchema {
    /// Builds the schema from `(column, declaration)` pairs. A declaration is a type name,
    /// optionally followed by ` not null` (columns are nullable unless declared otherwise).
    pub fn from_declarations(decls: &[(String, String)]) -> Result<Self, SchemaDeclError> {
        if decls.is_empty() {
            return Err(SchemaDeclError {
                column: String::new(),
                message:
                    "the schema declares no columns; declare at least one, e.g. { id = \"int64\" }"
                        .into(),
            });
        }
        let mut columns = Vec::with_capacity(decls.len());
        for (name, decl) in decls {
            let error = |message: String| SchemaDeclError {
                column: name.clone(),
                message,
            };
            if name.is_empty() || name.starts_with('$') {
                return Err(error(
                    "column names must be non-empty and must not start with '$' (reserved for control fields)".into(),
                ));
            }
            let decl = decl.trim();
            let (type_name, nullable) = match decl.strip_suffix("not null") {
                Some(rest) if rest.ends_with(' ') => (rest.trim_end(), false),
                _ => (decl, true),
            };
            let ty = ColumnType::parse(type_name).ok_or_else(|| {
                error(format!(
                    "unknown type {type_name:?}; allowed: {}, optionally followed by \" not null\"",
                    ColumnType::NAMES.join(", ")
                ))
            })?;
            columns.push(Column {
                name: name.clone(),
                ty,
                nullable,
            });
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow_type(), c.nullable))
            .collect();
        Ok(Self {
            columns,
            arrow: Arc::new(Schema::new(fields)),
        })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow.clone()
    }
}
