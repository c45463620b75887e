//! The rows of a function's output: one JSON object each, whose fields are sorted into
//! the schema's columns before each column decodes its values.
//!
//! arrow-json's own decoder for the rows finds each field's column by comparing the
//! field's name with the column names in order (below 16 columns; it hashes above). The
//! rows of one function's output almost always list their fields in one order, so this
//! decoder first tries the column that the field in the same place of the previous row
//! went to: one comparison per field instead of half the columns'. A row in another order
//! costs a search for its fields, as before; the result is the same either way.
//!
//! Same rules as arrow-json's: every row must be an object; a field the schema does not
//! declare is skipped; a column the row lacks gets tape position 0, arrow-json's null
//! sentinel; a field given twice counts its last value.

use std::sync::Arc;

use arrow_array::{ArrayRef, StructArray, new_empty_array};
use arrow_json::reader::{ArrayDecoder, DecoderContext, Tape, TapeElement};
use arrow_schema::{ArrowError, DataType, Fields};

/// Fields of a row whose columns are remembered for the next row; a row with more (say,
/// a function that wrote a map as the row) searches for the rest.
const MAX_REMEMBERED_FIELDS: usize = 256;

/// Decodes the rows (the root of the schema) into a struct array of the columns.
pub(super) struct RowDecoder {
    fields: Fields,
    columns: Vec<Box<dyn ArrayDecoder>>,
    /// Per column, per row: the tape position of the row's value; column after column.
    positions: Vec<u32>,
    /// The column each field of the previous row went to, in field order (`None` for a
    /// field no column declares).
    previous_order: Vec<Option<usize>>,
}

impl RowDecoder {
    /// A decoder for rows with `fields`, each column's values decoded by the decoder
    /// `ctx` makes for it (the job's strict decoders).
    pub(super) fn new(ctx: &DecoderContext, fields: &Fields) -> Result<Self, ArrowError> {
        let columns = fields
            .iter()
            .map(|field| ctx.make_decoder(field, field.is_nullable()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            fields: fields.clone(),
            columns,
            positions: Vec::new(),
            previous_order: Vec::new(),
        })
    }

    /// The column named `name`, trying the one the `at`-th field of the previous row
    /// went to first.
    fn column_of(&self, at: usize, name: &str) -> Option<usize> {
        if let Some(Some(guess)) = self.previous_order.get(at)
            && self.fields[*guess].name() == name
        {
            return Some(*guess);
        }
        self.fields.iter().position(|field| field.name() == name)
    }

    /// Records where each column's value of the row at tape position `start` is.
    fn sort_row(
        &mut self,
        tape: &Tape<'_>,
        row: usize,
        rows: usize,
        start: u32,
    ) -> Result<(), ArrowError> {
        let TapeElement::StartObject(end) = tape.get(start) else {
            return Err(tape.error(start, "{"));
        };
        let mut at = start + 1;
        let mut field = 0;
        while at < end {
            let TapeElement::String(name) = tape.get(at) else {
                return Err(tape.error(at, "field name"));
            };
            let column = self.column_of(field, tape.get_string(name));
            if let Some(column) = column {
                self.positions[column * rows + row] = at + 1;
            }
            match self.previous_order.get_mut(field) {
                Some(slot) => *slot = column,
                None if field < MAX_REMEMBERED_FIELDS => self.previous_order.push(column),
                None => {}
            }
            field += 1;
            at = tape.next(at + 1, "field value")?;
        }
        Ok(())
    }
}

impl ArrayDecoder for RowDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let rows = pos.len();
        if rows == 0 {
            return Ok(new_empty_array(&DataType::Struct(self.fields.clone())));
        }
        self.positions.clear();
        self.positions.resize(self.fields.len() * rows, 0);
        for (row, start) in pos.iter().enumerate() {
            self.sort_row(tape, row, rows, *start)?;
        }
        let arrays = self
            .columns
            .iter_mut()
            .zip(self.positions.chunks_exact(rows))
            .zip(&self.fields)
            .map(|((column, positions), field)| {
                column.decode(tape, positions).map_err(|error| match error {
                    ArrowError::JsonError(message) => ArrowError::JsonError(format!(
                        "whilst decoding field '{}': {message}",
                        field.name()
                    )),
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Also refuses nulls in a column declared `not null` (the strict decoders never
        // return one; they fail first, naming the row).
        let array = StructArray::try_new_with_length(self.fields.clone(), arrays, None, rows)?;
        Ok(Arc::new(array))
    }
}
