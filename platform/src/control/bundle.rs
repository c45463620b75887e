//! Bundles: a job folder as a `.tar.gz` (job.toml and the function's files), checked
//! completely before anything is written, then stored content-addressed.
//!
//! A bundle is refused unless every entry is a regular file or a folder whose path stays
//! inside the bundle (no symlinks, hard links, devices, absolute paths or `..`), it
//! unpacks to at most [`BundleLimits::max_unpacked_bytes`] in at most
//! [`BundleLimits::max_entries`] entries (bytes are counted while decompressing, so a
//! gzip bomb stops at the limit), and its job.toml passes the same validation as
//! `sluice validate`.
//!
//! Layout under the data folder:
//!
//! ```text
//! bundles/<sha256>.tar.gz   the bundle as uploaded
//! versions/<sha256>/        its files, unpacked once; never changed afterwards
//! ```
//!
//! Invariant: a folder under `versions/` appears only complete (unpacked beside it, then
//! renamed), so a running version never sees a partial or changing file.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use crate::spec::{JOB_FILE, JobSpec, SpecErrors, parse_job};

/// How large a bundle may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleLimits {
    /// Sum of the files' sizes once unpacked.
    pub max_unpacked_bytes: u64,
    /// Files and folders.
    pub max_entries: usize,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 64 * 1024 * 1024,
            max_entries: 10_000,
        }
    }
}

/// Why a bundle was refused (the uploader's to fix) or could not be stored (the server's).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is not a readable .tar.gz: {0}")]
    Unreadable(String),
    #[error("bundle entry {path:?} is a {kind}; only regular files and folders are allowed")]
    EntryType { path: String, kind: String },
    #[error("bundle entry {path:?} leaves the job folder; absolute paths and '..' are not allowed")]
    EntryPath { path: String },
    #[error("bundle entry {path:?} appears twice")]
    Duplicate { path: String },
    #[error("bundle unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("bundle has more than {limit} entries")]
    TooManyEntries { limit: usize },
    #[error("bundle has no {JOB_FILE} at its top level")]
    NoJobFile,
    #[error("{JOB_FILE} is invalid")]
    InvalidSpec(SpecErrors),
    #[error("bundle is for job {in_file:?} but was sent for job {requested:?}")]
    NameMismatch { requested: String, in_file: String },
    #[error("storing the bundle under {path}: {source}")]
    Store { path: PathBuf, source: io::Error },
}

impl BundleError {
    /// True when the bundle itself is at fault (400), false for a server-side failure.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Store { .. })
    }

    /// Each problem on its own, for an API error's `details`.
    pub fn details(&self) -> Vec<String> {
        match self {
            Self::InvalidSpec(errors) => errors.iter().map(ToString::to_string).collect(),
            _ => Vec::new(),
        }
    }
}

/// One entry of a checked bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BundleEntry {
    Folder(PathBuf),
    File {
        path: PathBuf,
        bytes: Vec<u8>,
        executable: bool,
    },
}

/// A bundle that passed every check except the job file's validation, in memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Hex sha256 of the `.tar.gz` as uploaded.
    pub sha256: String,
    gzip: Vec<u8>,
    entries: Vec<BundleEntry>,
}

impl Bundle {
    /// Reads and checks a `.tar.gz`; nothing is written.
    pub fn read(gzip: &[u8], limits: BundleLimits) -> Result<Self, BundleError> {
        let sha256 = hex(&Sha256::digest(gzip));
        // Tar headers and padding come on top of the files' bytes; allow for them so the
        // limit stays about the files, and count every decompressed byte against it.
        let stream_budget = limits
            .max_unpacked_bytes
            .saturating_add((limits.max_entries as u64 + 16).saturating_mul(3 * 512));
        let mut counted = CountingReader {
            inner: GzDecoder::new(gzip),
            left: stream_budget,
            limit: limits.max_unpacked_bytes,
        };
        let entries = read_entries(&mut counted, limits)?;
        // Whatever follows the archive is decompressed too: a bomb hidden behind the end
        // marker is stopped, and a corrupt stream is refused.
        io::copy(&mut counted, &mut io::sink()).map_err(read_error)?;
        Ok(Self {
            sha256,
            gzip: gzip.to_vec(),
            entries,
        })
    }

    /// The job.toml text.
    fn job_file(&self) -> Result<&[u8], BundleError> {
        self.entries
            .iter()
            .find_map(|entry| match entry {
                BundleEntry::File { path, bytes, .. } if path == Path::new(JOB_FILE) => {
                    Some(bytes.as_slice())
                }
                _ => None,
            })
            .ok_or(BundleError::NoJobFile)
    }

    /// Validates job.toml as `sluice validate` does, as if unpacked at `dir`, and checks
    /// that it names `requested` (when given).
    pub fn validate(&self, dir: &Path, requested: Option<&str>) -> Result<JobSpec, BundleError> {
        let text = String::from_utf8_lossy(self.job_file()?).into_owned();
        let env = |name: &str| std::env::var(name).ok();
        let spec =
            parse_job(&text, Path::new(JOB_FILE), dir, &env).map_err(BundleError::InvalidSpec)?;
        if let Some(requested) = requested
            && requested != spec.name
        {
            return Err(BundleError::NameMismatch {
                requested: requested.to_owned(),
                in_file: spec.name,
            });
        }
        Ok(spec)
    }
}

fn read_entries(
    stream: &mut CountingReader<GzDecoder<&[u8]>>,
    limits: BundleLimits,
) -> Result<Vec<BundleEntry>, BundleError> {
    let mut archive = tar::Archive::new(stream);
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut unpacked: u64 = 0;
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        if entries.len() == limits.max_entries {
            return Err(BundleError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = safe_path(&entry.path().map_err(read_error)?).ok_or_else(|| {
            BundleError::EntryPath {
                path: shown.clone(),
            }
        })?;
        let kind = entry.header().entry_type();
        let is_file = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous);
        if !is_file && !kind.is_dir() {
            return Err(BundleError::EntryType {
                path: shown,
                kind: entry_kind(kind).to_owned(),
            });
        }
        if path.as_os_str().is_empty() {
            // The archive's own top folder (`./`).
            continue;
        }
        if !seen.insert(path.clone()) {
            return Err(BundleError::Duplicate { path: shown });
        }
        if kind.is_dir() {
            entries.push(BundleEntry::Folder(path));
            continue;
        }
        unpacked = unpacked.saturating_add(entry.size());
        if unpacked > limits.max_unpacked_bytes {
            return Err(BundleError::TooLarge {
                limit: limits.max_unpacked_bytes,
            });
        }
        let executable = entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0);
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry.read_to_end(&mut bytes).map_err(read_error)?;
        entries.push(BundleEntry::File {
            path,
            bytes,
            executable,
        });
    }
    Ok(entries)
}

/// The relative path inside the bundle, or `None` when it would leave it.
fn safe_path(path: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

fn entry_kind(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "named pipe",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}

/// Turns a read failure into a refusal; the size limit surfaces as [`BundleError::TooLarge`]
/// however deeply the tar reader wrapped it.
fn read_error(error: io::Error) -> BundleError {
    match limit_reached(&error) {
        Some(limit) => BundleError::TooLarge { limit },
        None => BundleError::Unreadable(error.to_string()),
    }
}

fn limit_reached(error: &(dyn std::error::Error + 'static)) -> Option<u64> {
    if let Some(reached) = error.downcast_ref::<LimitReached>() {
        return Some(reached.limit);
    }
    // An `io::Error`'s `source()` skips the error it wraps; look at that one first.
    if let Some(inner) = error
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
        && let Some(limit) = limit_reached(inner)
    {
        return Some(limit);
    }
    error.source().and_then(limit_reached)
}

#[derive(Debug, thiserror::Error)]
#[error("bundle unpacks to more than {limit} bytes")]
struct LimitReached {
    limit: u64,
}

/// Fails once more than `left` bytes have been read through it.
struct CountingReader<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(read as u64)
            .ok_or_else(|| io::Error::other(LimitReached { limit: self.limit }))?;
        Ok(read)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Bundles and their unpacked folders under a data folder.
#[derive(Debug, Clone)]
pub struct BundleStore {
    root: PathBuf,
    pub limits: BundleLimits,
}

impl BundleStore {
    pub fn new(data_dir: &Path, limits: BundleLimits) -> Self {
        Self {
            root: data_dir.to_path_buf(),
            limits,
        }
    }

    /// Where the bundle with `sha256` runs from.
    pub fn version_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("versions").join(sha256)
    }

    fn bundle_file(&self, sha256: &str) -> PathBuf {
        self.root.join("bundles").join(format!("{sha256}.tar.gz"))
    }

    /// Stores a checked bundle and unpacks it (both only once per content); returns the
    /// folder it runs from.
    pub fn store(&self, bundle: &Bundle) -> Result<PathBuf, BundleError> {
        let file = self.bundle_file(&bundle.sha256);
        if !file.exists() {
            write_atomically(&file, &bundle.gzip)?;
        }
        self.unpack(bundle)
    }

    /// The folder of a stored version, unpacking its bundle again if the folder is gone.
    pub fn ensure_unpacked(&self, sha256: &str) -> Result<PathBuf, BundleError> {
        let dir = self.version_dir(sha256);
        if dir.is_dir() {
            return Ok(dir);
        }
        let file = self.bundle_file(sha256);
        let gzip = std::fs::read(&file).map_err(|source| BundleError::Store {
            path: file.clone(),
            source,
        })?;
        let bundle = Bundle::read(&gzip, self.limits)?;
        self.unpack(&bundle)
    }

    fn unpack(&self, bundle: &Bundle) -> Result<PathBuf, BundleError> {
        let dir = self.version_dir(&bundle.sha256);
        if dir.is_dir() {
            return Ok(dir);
        }
        let parent = self.root.join("versions");
        let store_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Store { path, source }
        };
        std::fs::create_dir_all(&parent).map_err(store_error(&parent))?;
        let staging = tempfile::Builder::new()
            .prefix(".unpacking-")
            .tempdir_in(&parent)
            .map_err(store_error(&parent))?;
        for entry in &bundle.entries {
            match entry {
                BundleEntry::Folder(path) => {
                    let target = staging.path().join(path);
                    std::fs::create_dir_all(&target).map_err(store_error(&target))?;
                }
                BundleEntry::File {
                    path,
                    bytes,
                    executable,
                } => {
                    let target = staging.path().join(path);
                    if let Some(folder) = target.parent() {
                        std::fs::create_dir_all(folder).map_err(store_error(folder))?;
                    }
                    write_new_file(&target, bytes, *executable).map_err(store_error(&target))?;
                }
            }
        }
        let staged = staging.keep();
        if let Err(source) = std::fs::rename(&staged, &dir) {
            let _ = std::fs::remove_dir_all(&staged);
            // Another deployment of the same content finished first.
            if !dir.is_dir() {
                return Err(BundleError::Store { path: dir, source });
            }
        }
        Ok(dir)
    }
}

fn write_new_file(path: &Path, bytes: &[u8], executable: bool) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let store_error = |source| BundleError::Store {
        path: path.to_path_buf(),
        source,
    };
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder).map_err(store_error)?;
    let mut staged = tempfile::NamedTempFile::new_in(folder).map_err(store_error)?;
    io::Write::write_all(&mut staged, bytes).map_err(store_error)?;
    staged.as_file().sync_all().map_err(store_error)?;
    staged
        .persist(path)
        .map_err(|error| store_error(error.error))?;
    Ok(())
}

/// Packs a job folder as a bundle: every regular file and folder under `dir`, paths
/// relative to it. A link is packed as what it points to (as the function sandbox stages
/// a job folder), so a job may link a shared module; a link back into a folder being
/// packed, and other special files, are refused.
pub fn pack_folder(dir: &Path) -> io::Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(true);
    // No times, owners or umask in the headers: the same files give the same bundle, so
    // deploying an unchanged folder again is recognised as the same version.
    builder.mode(tar::HeaderMode::Deterministic);
    // Each folder to pack with the real folders above it, to catch a link loop.
    let mut stack = vec![(PathBuf::new(), vec![std::fs::canonicalize(dir)?])];
    while let Some((relative, ancestors)) = stack.pop() {
        let mut children: Vec<_> =
            std::fs::read_dir(dir.join(&relative))?.collect::<Result<Vec<_>, _>>()?;
        children.sort_by_key(std::fs::DirEntry::file_name);
        for child in children {
            let path = relative.join(child.file_name());
            // What the entry is, through any link.
            let kind = std::fs::metadata(child.path())?.file_type();
            if kind.is_dir() {
                let real = std::fs::canonicalize(child.path())?;
                if ancestors.contains(&real) {
                    return Err(io::Error::other(format!(
                        "{} links back to a folder that holds it",
                        child.path().display()
                    )));
                }
                builder.append_dir(&path, child.path())?;
                let mut below = ancestors.clone();
                below.push(real);
                stack.push((path, below));
            } else if kind.is_file() {
                builder.append_path_with_name(child.path(), &path)?;
            } else {
                return Err(io::Error::other(format!(
                    "{} is not a regular file or folder; bundles hold only those",
                    child.path().display()
                )));
            }
        }
    }
    builder.into_inner()?.finish()
}

#[cfg(test)]
#[path = "tests/bundle.rs"]
mod tests;
