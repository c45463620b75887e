//! The job's files as its function sees them: a read-only copy ("the bundle") in the
//! platform's data folder, readable by the job's group only, and a private writable
//! scratch folder per instance.
//!
//! ```text
//! <data>/functions/                   root 0711
//!   <platform pid>/                   root 0711   removed when the process ends cleanly;
//!     <job>.<n>/                      root:<job gid> 0710   a later start sweeps the
//!       bundle/   the job folder      root:<job gid> 0750 dirs, 0640 / 0750 files
//!       scratch/<instance>/           <job uid> 0700, when no private /tmp can be mounted
//! ```
//!
//! `<data>` is `SLUICE_DATA_DIR`, by default `/var/lib/sluice`.
//!
//! Why a copy and not the job folder itself: the job folder is often a root-only folder
//! (0700, or inside one), which a function running as its own uid cannot even enter; and
//! the function must not be able to change its own code or the job's settings. The copy
//! is made once per job and platform process, at the first instance start (symbolic
//! links are followed, so a link to a shared module brings its content; sockets and
//! other special files are skipped), so its cost is paid once, not per instance. A job
//! folder is what a function may see: files outside it (`../shared.py`) are not copied.
//!
//! A job folder over `SLUICE_BUNDLE_MAX_BYTES` (default 1 GiB, counted before anything
//! is copied) is refused with a permanent error: the copy would fill the data folder's
//! disk, once per job and platform process.
//!
//! Invariants: nothing under `bundle/` is writable by the job's uid; the bundle of one
//! job is not readable by another job's uid (group-only permissions, 0710 job folder).

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _, chown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::identity::JobIdentity;
use super::namespaces::MountPlan;
use super::protocol::InvokeError;
use super::sandbox::InstanceContext;

/// The platform's data folder when `SLUICE_DATA_DIR` is not set.
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/sluice";
/// Distinguishes the bundles this process stages.
static NEXT_BUNDLE: AtomicU64 = AtomicU64::new(1);
/// How deep a job folder may nest (symbolic-link loops end here).
const MAX_DEPTH: usize = 32;

/// A job's staged files in this platform process; removed when dropped.
#[derive(Debug)]
pub(crate) struct Bundle {
    /// `<data>/functions/<pid>/<job>.<n>`.
    root: PathBuf,
    identity: JobIdentity,
}

/// Most bytes a job folder may hold to be staged, when `SLUICE_BUNDLE_MAX_BYTES` is not
/// set: the copy is made on the data folder's disk for every job of every platform process.
pub(crate) const DEFAULT_MAX_BUNDLE_BYTES: u64 = 1 << 30;
/// The setting that overrides [`DEFAULT_MAX_BUNDLE_BYTES`] (bytes).
pub(crate) const MAX_BUNDLE_VARIABLE: &str = "SLUICE_BUNDLE_MAX_BYTES";

/// Staging a job's files failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    #[error("cannot stage the job folder {source_dir} for its function in {target}: {error}")]
    Io {
        source_dir: PathBuf,
        target: PathBuf,
        #[source]
        error: io::Error,
    },
    /// Permanent: the job folder has to shrink (or the cap to grow).
    #[error(
        "the job folder {source_dir} holds more than {cap} bytes (at least {size}), the most \
         a function's staged copy may hold; keep data out of the job folder, or raise \
         {MAX_BUNDLE_VARIABLE} on the platform"
    )]
    TooLarge {
        source_dir: PathBuf,
        size: u64,
        cap: u64,
    },
}

/// The cap on a staged job folder: `SLUICE_BUNDLE_MAX_BYTES`, else the default.
fn max_bundle_bytes() -> u64 {
    std::env::var(MAX_BUNDLE_VARIABLE)
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_BUNDLE_BYTES)
}

/// The bytes of the files `copy_tree` would copy from `from`, counted until past `cap`.
fn tree_size(from: &Path, cap: u64, depth: usize) -> io::Result<u64> {
    let mut total = 0u64;
    if depth > MAX_DEPTH {
        return Ok(total);
    }
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        // Follows symbolic links, as the copy does; a dangling one is skipped.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            total = total.saturating_add(tree_size(&path, cap, depth + 1)?);
        } else if metadata.is_file() {
            total = total.saturating_add(metadata.len());
        }
        if total > cap {
            break;
        }
    }
    Ok(total)
}

fn data_dir() -> PathBuf {
    std::env::var_os("SLUICE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

fn make_dir(dir: &Path, mode: u32, owner: Option<JobIdentity>, group_only: bool) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        other => other?,
    }
    match (owner, group_only) {
        (Some(identity), false) => chown(dir, Some(identity.uid), Some(identity.gid))?,
        (Some(identity), true) => chown(dir, Some(0), Some(identity.gid))?,
        (None, _) => {}
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

impl Bundle {
    /// Copies `source` (the job folder) for `job`, readable by `identity`'s group only.
    pub(crate) fn stage(
        job: &str,
        source: &Path,
        identity: JobIdentity,
    ) -> Result<Self, StageError> {
        let functions = data_dir().join("functions");
        // Unique per bundle: two runners of one job name may live in one process.
        let number = NEXT_BUNDLE.fetch_add(1, Ordering::Relaxed);
        let root = functions
            .join(std::process::id().to_string())
            .join(format!("{job}.{number}"));
        let fail = |error| StageError::Io {
            source_dir: source.to_path_buf(),
            target: root.clone(),
            error,
        };
        let cap = max_bundle_bytes();
        let size = tree_size(source, cap, 0).map_err(fail)?;
        if size > cap {
            return Err(StageError::TooLarge {
                source_dir: source.to_path_buf(),
                size,
                cap,
            });
        }
        std::fs::create_dir_all(data_dir()).map_err(fail)?;
        make_dir(&functions, 0o711, None, false).map_err(fail)?;
        sweep_stale(&functions);
        let own = functions.join(std::process::id().to_string());
        make_dir(&own, 0o711, None, false).map_err(fail)?;
        make_dir(&root, 0o710, Some(identity), true).map_err(fail)?;
        copy_tree(source, &root.join("bundle"), identity, 0).map_err(fail)?;
        make_dir(&root.join("scratch"), 0o710, Some(identity), true).map_err(fail)?;
        Ok(Bundle { root, identity })
    }

    /// The folder the function runs in.
    pub(crate) fn dir(&self) -> PathBuf {
        self.root.join("bundle")
    }

    /// A new, empty scratch folder for `instance`, owned by the job's uid, for when the
    /// instance cannot get a private `/tmp`. The caller removes it when the instance stops.
    pub(crate) fn scratch(&self, instance: &str) -> io::Result<PathBuf> {
        let dir = self.root.join("scratch").join(instance);
        let _ = std::fs::remove_dir_all(&dir);
        make_dir(&dir, 0o700, Some(self.identity), false)?;
        Ok(dir)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), %error, "cannot remove a staged function bundle");
        }
        // `<data>/functions/<pid>` stays (another bundle may be being staged in it); the
        // next platform process removes it.
    }
}

/// Removes the folders of platform processes that are gone.
fn sweep_stale(functions: &Path) {
    let Ok(entries) = std::fs::read_dir(functions) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copies `from` into the new folder `to`: folders 0750 and files 0640 (0750 when any
/// execute bit was set), all owned by root and the job's group.
fn copy_tree(from: &Path, to: &Path, identity: JobIdentity, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} nests deeper than {MAX_DEPTH} folders (a symbolic-link loop?)",
            from.display()
        )));
    }
    make_dir(to, 0o750, Some(identity), true)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        // Follows symbolic links; a dangling one is skipped.
        let Ok(metadata) = std::fs::metadata(&source) else {
            continue;
        };
        if metadata.is_dir() {
            copy_tree(&source, &target, identity, depth + 1)?;
        } else if metadata.is_file() {
            std::fs::copy(&source, &target)?;
            chown(&target, Some(0), Some(identity.gid))?;
            let mode = if metadata.permissions().mode() & 0o111 != 0 {
                0o750
            } else {
                0o640
            };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// What a job's instances run as and in, when the platform can give them a user.
#[derive(Debug)]
pub(crate) struct JobSandbox {
    pub(crate) identity: JobIdentity,
    pub(crate) bundle: Bundle,
}

/// Where one instance runs and what it sees: its working directory, the mount namespace
/// it enters (with a user of its own and mount namespaces), or else its scratch folder.
#[derive(Debug)]
pub(crate) struct InstanceView {
    pub(crate) workdir: PathBuf,
    pub(crate) mounts: Option<MountPlan>,
    pub(crate) scratch: Option<PathBuf>,
}

impl InstanceView {
    /// The view for `context`: the job folder itself when the function runs as the
    /// platform's user, else the job's bundle, in a mount namespace of its own when
    /// `mount_namespaces`, else with a fresh scratch folder.
    pub(crate) fn prepare(
        context: &InstanceContext<'_>,
        mount_namespaces: bool,
    ) -> Result<Self, InvokeError> {
        let sandbox_error = |what: &str, error: io::Error| InvokeError::Sandbox {
            reason: format!("cannot {what}: {error}"),
        };
        let Some(sandbox) = context.sandbox else {
            return Ok(InstanceView {
                workdir: context.dir.to_path_buf(),
                mounts: None,
                scratch: None,
            });
        };
        let workdir = sandbox.bundle.dir();
        if mount_namespaces {
            let hide_run = !context.spec.network;
            let mounts = MountPlan::new(&workdir, sandbox.identity, hide_run)
                .map_err(|error| sandbox_error("prepare the mount namespace", error))?;
            return Ok(InstanceView {
                workdir,
                mounts: Some(mounts),
                scratch: None,
            });
        }
        let scratch = sandbox
            .bundle
            .scratch(context.instance)
            .map_err(|error| sandbox_error("create the scratch folder", error))?;
        Ok(InstanceView {
            workdir,
            mounts: None,
            scratch: Some(scratch),
        })
    }
}

/// Empties and removes an instance's scratch folder.
pub(crate) fn remove_scratch(scratch: Option<&Path>) {
    if let Some(dir) = scratch
        && let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a function's scratch folder");
    }
}
