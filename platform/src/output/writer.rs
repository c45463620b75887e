//! The Parquet sink: output batches are split by partition, encoded into in-memory
//! Parquet files (one open file per source split and Hive partition), and uploaded when
//! flushed.
//!
//! Lifecycle, as the caller drives it:
//!
//! ```text
//! let mut sink = ParquetSink::new(location, &spec.output, "part-<run id>")?;
//! loop {
//!     sink.write(&split, &batch)?;                  // CPU: split + encode (blocking thread)
//!     if sink.flush_due(Instant::now()) {
//!         sink.finish_open_files(&ranges)?;         // CPU: close files, fix their names
//!         let names = sink.pending_objects();       // what the commit intent lists
//!         let files = sink.flush().await?;          // I/O: upload every closed file
//!         // every row written so far is durable in `files` (and earlier flushes): commit
//!     }
//! }
//! ```
//!
//! Invariants:
//! - Rows of different source splits never share a file, so a file's rows all derive
//!   from one split's positions.
//! - A file is named when it closes. A Kafka split given a range in
//!   [`ParquetSink::finish_open_files`] names its files from that range,
//!   `<prefix>/<hive path>/<topic>-<partition>-<first:020>-<last:020>.parquet` — the same
//!   name whenever the same range is written again, which is what makes a redo overwrite
//!   instead of duplicate. There is one such file per (range, Hive path): the sink never
//!   rolls a file before a flush. Every other file is named
//!   `<prefix>/<hive path>/<file_stem>-<seq:06>.parquet`; `seq` counts files of this sink
//!   and never repeats.
//! - `flush` closes every open file. Files that fail to upload stay pending, encoded, and
//!   the next `flush` uploads them again under the same names (an upload is a whole-object
//!   PUT or a completed multipart upload, so a retry overwrites and never duplicates). When
//!   `flush` returns `Ok`, every row written so far is in a completed object, and the
//!   returned list holds every file completed since the previous `Ok`.
//! - Memory is bounded by what is buffered: callers flush once `flush_due` says so, which
//!   keeps it near `max_file_size` plus one row group (≤ 128 Ki rows) per open file.
//! - Timestamps are written as INT64 with their declared unit (MILLIS or MICROS, adjusted
//!   to UTC); never INT96 or nanoseconds.
//! - An encoding failure leaves the sink unusable (its rows may be half written): every
//!   later call fails and the caller restarts from its last commit.

use std::collections::BTreeMap;
use std::mem;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use tracing::debug;

use sluice_connectors::{Classify, PositionRange, Retry, SplitId};

use super::partition::{PartitionError, file_schema, split_by_partition};
use super::store::OutputLocation;
use crate::commit::names::range_stem;
use crate::spec::{Compression, OutputSpec};

/// Most rows in one Parquet row group.
pub const MAX_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Bytes a column's dictionary may reach before the column falls back to plain encoding
/// (parquet's default: 1 MiB). Mostly distinct strings (ids, URLs) gain nothing from one
/// but pay for hashing every value and holding it: on the comparison's events, 17 % smaller
/// files and 15 % less peak RSS at the same rate (BENCHMARKS.md).
const DICTIONARY_PAGE_BYTES: usize = 256 << 10;

/// Files larger than this are uploaded with a multipart upload instead of one PUT.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads.
const MULTIPART_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const MULTIPART_PARTS_IN_FLIGHT: usize = 4;
/// Files uploaded at once by one flush.
const UPLOADS_IN_FLIGHT: usize = 8;

/// A completed Parquet object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// The object's location in the output store, prefix included, escaped as stored;
    /// `object_store::path::Path::parse(&path)` gives it back verbatim.
    pub path: String,
    pub rows: usize,
    pub bytes: u64,
}

/// Writing output failed. Its [`Classify::retry`] says whether calling `flush` again can
/// help; every other error is a configuration or internal fault.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("output {url:?}: invalid file stem {stem:?}: {reason}")]
    InvalidFileStem {
        url: String,
        stem: String,
        reason: String,
    },
    #[error(
        "output {url:?}: partition_by {partition_by:?} leaves no column to write; at least one column must not be a partition column"
    )]
    NoDataColumns {
        url: String,
        partition_by: Vec<String>,
    },
    #[error(
        "output {url:?}: batch schema does not match the output schema: expected {expected}, got {got}"
    )]
    SchemaMismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("output {url:?}: {source}")]
    Partition {
        url: String,
        #[source]
        source: PartitionError,
    },
    #[error("output {url:?}: invalid object path {path:?}: {source}")]
    ObjectPath {
        url: String,
        path: String,
        #[source]
        source: object_store::path::Error,
    },
    #[error(
        "output {url:?}: failed to encode parquet file {path:?}: {source}; the sink is unusable and rows not yet flushed must be produced again"
    )]
    Encode {
        url: String,
        path: String,
        #[source]
        source: ParquetError,
    },
    #[error(
        "output {url:?}: the sink failed earlier ({reason}) and accepts no more work; rows not yet flushed must be produced again"
    )]
    Broken { url: String, reason: String },
    #[error(
        "output {url:?}: failed to upload {failed} of {total} parquet files (first {path:?}): {source}; they stay pending and the next flush retries them"
    )]
    Upload {
        url: String,
        path: String,
        failed: usize,
        total: usize,
        #[source]
        source: Box<object_store::Error>,
    },
}

/// A later `flush` may succeed when the store failed, not the data or the sink.
impl Classify for WriteError {
    fn retry(&self) -> Retry {
        Retry::when(matches!(self, Self::Upload { .. }))
    }
}

/// A Parquet file being written, in memory; named when it closes.
struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    rows: usize,
    first_row_at: Instant,
}

/// A closed file waiting for its upload.
struct PendingFile {
    split: SplitId,
    object: Path,
    data: Bytes,
    rows: usize,
    first_row_at: Instant,
}

/// Buffers output rows in open Parquet files, one per Hive partition, and uploads them
/// on [`ParquetSink::flush`]. See the module docs for the contract.
pub struct ParquetSink {
    location: OutputLocation,
    file_stem: String,
    partition_by: Vec<String>,
    input_schema: SchemaRef,
    file_schema: SchemaRef,
    properties: WriterProperties,
    max_file_size: u64,
    max_file_age: Duration,
    next_seq: u64,
    /// Open files by source split and Hive path.
    open: BTreeMap<(SplitId, String), OpenFile>,
    /// Closed files not uploaded yet, oldest first.
    pending: Vec<PendingFile>,
    /// Files uploaded since the last successful flush.
    uploaded: Vec<WrittenFile>,
    /// Why the sink refuses work, after an encoding failure.
    broken: Option<String>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("url", &self.location.url)
            .field("file_stem", &self.file_stem)
            .field("open_files", &self.open.len())
            .field("pending_files", &self.pending.len())
            .field("buffered_rows", &self.buffered_rows())
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// A sink writing `spec`'s schema, partitioning and compression under `location`.
    /// `file_stem` starts every object name (e.g. `part-<run id>`) and must be a single
    /// path segment.
    pub fn new(
        location: OutputLocation,
        spec: &OutputSpec,
        file_stem: &str,
    ) -> Result<Self, WriteError> {
        let url = location.url.clone();
        if let Err(reason) = check_file_stem(file_stem) {
            return Err(WriteError::InvalidFileStem {
                url,
                stem: file_stem.into(),
                reason,
            });
        }
        let input_schema = spec.schema.arrow_schema();
        for column in &spec.partition_by {
            if input_schema.index_of(column).is_err() {
                return Err(WriteError::Partition {
                    url,
                    source: PartitionError::UnknownColumn {
                        column: column.clone(),
                    },
                });
            }
        }
        let file_schema = file_schema(&input_schema, &spec.partition_by);
        if file_schema.fields().is_empty() {
            return Err(WriteError::NoDataColumns {
                url,
                partition_by: spec.partition_by.clone(),
            });
        }
        let compression = match spec.compression {
            Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
            Compression::Snappy => ParquetCompression::SNAPPY,
            Compression::None => ParquetCompression::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
            // Spec-conformant Parquet types for every reader; ms and us timestamps keep
            // their unit either way.
            .set_coerce_types(true)
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .build();
        Ok(Self {
            location,
            file_stem: file_stem.into(),
            partition_by: spec.partition_by.clone(),
            input_schema,
            file_schema,
            properties,
            max_file_size: spec.max_file_size,
            max_file_age: spec.max_file_age,
            next_seq: 0,
            open: BTreeMap::new(),
            pending: Vec::new(),
            uploaded: Vec::new(),
            broken: None,
        })
    }

    /// Splits `batch` (rows derived from events of `split`) by partition and encodes it
    /// into the split's open files, opening files as needed. CPU-bound and synchronous:
    /// callers on an async runtime run it on a blocking thread (`spawn_blocking`).
    /// `batch` must have the output schema's Arrow form, as
    /// [`super::decode::decode_rows`] produces.
    pub fn write(&mut self, split: &SplitId, batch: &RecordBatch) -> Result<(), WriteError> {
        self.check_usable()?;
        if batch.schema().fields() != self.input_schema.fields() {
            return Err(WriteError::SchemaMismatch {
                url: self.location.url.clone(),
                expected: self.input_schema.to_string(),
                got: batch.schema().to_string(),
            });
        }
        let groups = split_by_partition(batch, &self.partition_by).map_err(|source| {
            WriteError::Partition {
                url: self.location.url.clone(),
                source,
            }
        })?;
        // Open every missing file before writing anything, so a failure here leaves the
        // sink as it was.
        let now = Instant::now();
        for (partition, _) in &groups {
            let key = (split.clone(), partition.clone());
            if !self.open.contains_key(&key) {
                let file = self.open_file(split, partition, now)?;
                self.open.insert(key, file);
            }
        }
        for (partition, part) in &groups {
            let Some(file) = self.open.get_mut(&(split.clone(), partition.clone())) else {
                continue;
            };
            if let Err(source) = file.writer.write(part) {
                let path = describe_open_file(split, partition);
                self.broken = Some(format!("encoding {path} failed: {source}"));
                return Err(WriteError::Encode {
                    url: self.location.url.clone(),
                    path,
                    source,
                });
            }
            file.rows += part.num_rows();
        }
        Ok(())
    }

    fn open_file(
        &mut self,
        split: &SplitId,
        partition: &str,
        now: Instant,
    ) -> Result<OpenFile, WriteError> {
        let writer = ArrowWriter::try_new(
            Vec::new(),
            self.file_schema.clone(),
            Some(self.properties.clone()),
        )
        .map_err(|source| WriteError::Encode {
            url: self.location.url.clone(),
            path: describe_open_file(split, partition),
            source,
        })?;
        Ok(OpenFile {
            writer,
            rows: 0,
            first_row_at: now,
        })
    }

    /// The object a closing file of `split` under Hive path `partition` is written to:
    /// named from the split's range when it has one, else from the stem and a sequence
    /// number.
    fn object_for(
        &mut self,
        split: &SplitId,
        partition: &str,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<Path, WriteError> {
        let name = match ranges
            .get(split)
            .and_then(|range| range_stem(split, *range))
        {
            Some(stem) => format!("{stem}.parquet"),
            None => {
                self.next_seq += 1;
                format!("{}-{:06}.parquet", self.file_stem, self.next_seq - 1)
            }
        };
        let relative = if partition.is_empty() {
            name
        } else {
            format!("{partition}/{name}")
        };
        self.location
            .object_path(&relative)
            .map_err(|source| WriteError::ObjectPath {
                url: self.location.url.clone(),
                path: relative.clone(),
                source,
            })
    }

    /// Rows written and not yet durable (open and pending files).
    pub fn buffered_rows(&self) -> usize {
        self.open.values().map(|f| f.rows).sum::<usize>()
            + self.pending.iter().map(|f| f.rows).sum::<usize>()
    }

    /// Encoded bytes held in memory: open files (flushed row groups plus the estimated
    /// size of the row group in progress) and closed files awaiting upload.
    pub fn buffered_bytes(&self) -> usize {
        self.open
            .values()
            .map(|f| f.writer.bytes_written() + f.writer.in_progress_size())
            .sum::<usize>()
            + self.pending.iter().map(|f| f.data.len()).sum::<usize>()
    }

    /// True once the buffered bytes reach `max_file_size` or the oldest buffered row is
    /// `max_file_age` old.
    pub fn flush_due(&self, now: Instant) -> bool {
        let size_due =
            u64::try_from(self.buffered_bytes()).unwrap_or(u64::MAX) >= self.max_file_size;
        size_due
            || self
                .flush_deadline()
                .is_some_and(|deadline| now >= deadline)
    }

    /// When age will force a flush: `max_file_age` after the oldest buffered row; `None`
    /// when nothing is buffered.
    pub fn flush_deadline(&self) -> Option<Instant> {
        let oldest = self
            .open
            .values()
            .map(|f| f.first_row_at)
            .chain(self.pending.iter().map(|f| f.first_row_at))
            .min()?;
        Some(oldest.checked_add(self.max_file_age).unwrap_or(oldest))
    }

    /// Closes every open file into the upload queue and names it: files of a Kafka split
    /// with a range in `ranges` are named from it, the others from the stem (see the
    /// module docs). The last row group and footer of each file are encoded here: CPU
    /// work, callers on an async runtime run it on a blocking thread. [`Self::flush`]
    /// closes what is still open itself, naming every file from the stem.
    pub fn finish_open_files(
        &mut self,
        ranges: &BTreeMap<SplitId, PositionRange>,
    ) -> Result<(), WriteError> {
        self.check_usable()?;
        for ((split, partition), file) in mem::take(&mut self.open) {
            if file.rows == 0 {
                // Opened by a write that failed before writing to it; nothing to keep.
                continue;
            }
            let object = self.object_for(&split, &partition, ranges)?;
            let path = object.to_string();
            match file.writer.into_inner() {
                Ok(data) => self.pending.push(PendingFile {
                    split,
                    object,
                    data: Bytes::from(data),
                    rows: file.rows,
                    first_row_at: file.first_row_at,
                }),
                Err(source) => {
                    self.broken = Some(format!("closing {path} failed: {source}"));
                    return Err(WriteError::Encode {
                        url: self.location.url.clone(),
                        path,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Closes every open file and uploads every closed one. `Ok` means every row written
    /// so far is in a completed object; it returns the files completed since the last
    /// `Ok` (empty when nothing was written). On an upload failure the failed files stay
    /// pending and the next call retries them under the same names.
    ///
    /// Cancel-safe: dropping the future before it finishes loses nothing; the next call
    /// uploads every pending file again, overwriting any that had completed.
    pub async fn flush(&mut self) -> Result<Vec<WrittenFile>, WriteError> {
        self.finish_open_files(&BTreeMap::new())?;
        // Owned inputs (cheap clones) keep the upload futures free of borrows, so the
        // flush future stays `Send`.
        let uploads: Vec<(usize, Path, Bytes)> = self
            .pending
            .iter()
            .enumerate()
            .map(|(index, file)| (index, file.object.clone(), file.data.clone()))
            .collect();
        let store = self.location.store.clone();
        let results: Vec<(usize, object_store::Result<()>)> = futures::stream::iter(uploads)
            .map(|(index, object, data)| {
                let store = store.clone();
                async move { (index, upload(&*store, &object, data).await) }
            })
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .collect()
            .await;
        let mut failures: BTreeMap<usize, object_store::Error> = results
            .into_iter()
            .filter_map(|(index, result)| result.err().map(|e| (index, e)))
            .collect();
        let total = self.pending.len();
        let failed = failures.len();
        let mut first_failure = None;
        for (index, file) in mem::take(&mut self.pending).into_iter().enumerate() {
            match failures.remove(&index) {
                None => {
                    let written = WrittenFile {
                        path: file.object.to_string(),
                        rows: file.rows,
                        bytes: file.data.len() as u64,
                    };
                    debug!(
                        url = %self.location.url,
                        path = %written.path,
                        rows = written.rows,
                        bytes = written.bytes,
                        "uploaded parquet file"
                    );
                    self.uploaded.push(written);
                }
                Some(error) => {
                    if first_failure.is_none() {
                        first_failure = Some((file.object.to_string(), error));
                    }
                    self.pending.push(file);
                }
            }
        }
        match first_failure {
            Some((path, source)) => Err(WriteError::Upload {
                url: self.location.url.clone(),
                path,
                failed,
                total,
                source: Box::new(source),
            }),
            None => Ok(mem::take(&mut self.uploaded)),
        }
    }

    /// The objects closed files will be uploaded to, per split, in store form (prefix
    /// included): what a commit intent lists before the upload starts.
    pub fn pending_objects(&self) -> BTreeMap<SplitId, Vec<String>> {
        let mut objects: BTreeMap<SplitId, Vec<String>> = BTreeMap::new();
        for file in &self.pending {
            objects
                .entry(file.split.clone())
                .or_default()
                .push(file.object.to_string());
        }
        objects
    }

    fn check_usable(&self) -> Result<(), WriteError> {
        match &self.broken {
            Some(reason) => Err(WriteError::Broken {
                url: self.location.url.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Uploads one whole object: a single PUT, or above [`MULTIPART_THRESHOLD`] a multipart
/// upload, which becomes visible only when completed (and is aborted on failure).
async fn upload(store: &dyn ObjectStore, object: &Path, data: Bytes) -> object_store::Result<()> {
    if data.len() <= MULTIPART_THRESHOLD {
        store
            .put_opts(object, PutPayload::from(data), PutOptions::default())
            .await?;
        return Ok(());
    }
    let upload = store
        .put_multipart_opts(object, PutMultipartOptions::default())
        .await?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
    let mut offset = 0;
    while offset < data.len() {
        if let Err(error) = parts.wait_for_capacity(MULTIPART_PARTS_IN_FLIGHT).await {
            // The upload failed; abort so no parts linger. The original error matters more.
            let _ = parts.abort().await;
            return Err(error);
        }
        let end = (offset + MULTIPART_PART_SIZE).min(data.len());
        parts.put(data.slice(offset..end));
        offset = end;
    }
    parts.finish().await?;
    Ok(())
}

/// How an open (not yet named) file appears in messages.
fn describe_open_file(split: &SplitId, partition: &str) -> String {
    format!("open file of split {split} under {partition:?}")
}

fn check_file_stem(stem: &str) -> Result<(), String> {
    if stem.is_empty() {
        return Err("it is empty".into());
    }
    if stem.contains('/') {
        return Err("it contains '/'; it must be a single path segment".into());
    }
    Path::parse(format!("{stem}-000000.parquet"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on unexpected errors
#[path = "tests/writer.rs"]
mod tests;
