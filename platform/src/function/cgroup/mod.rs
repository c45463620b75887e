//! Control groups for function instances: a process-count limit (`pids.max`), a memory
//! limit the kernel enforces with its OOM killer, and a way to kill every process an
//! instance started, including ones that left its process group.
//!
//! Layout, under the platform's own cgroup in each hierarchy used:
//!
//! ```text
//! <platform's cgroup>/sluice/<job>/<instance>.<platform pid>.<n>
//! ```
//!
//! Which hierarchies (v2, or v1 `pids` and `memory`) are used is decided once per process
//! by [`CgroupHierarchy::detect`] (`hierarchy.rs`).
//!
//! Invariants: an [`InstanceCgroup`] is created empty before its process is spawned; the
//! child joins it before `exec` (so everything it ever starts is inside); when the value
//! is removed or dropped, every process in it is killed and the directory removed. A job
//! directory lives while any [`JobCgroup`] handle for it does, and is removed after.
//! All I/O here is on cgroupfs, which the kernel serves from memory in microseconds, so it
//! runs inline, like `fork` itself, rather than on a blocking thread.

mod hierarchy;

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub(crate) use hierarchy::{CgroupHierarchy, CgroupVersion};

/// How long removing an instance's cgroup waits for its processes to go.
const REMOVE_BOUND: Duration = Duration::from_secs(5);
/// Rounds of "list processes, SIGKILL each" when `cgroup.kill` is not available.
const KILL_ROUNDS: usize = 64;

/// Limits of one instance's cgroup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CgroupLimits {
    pub(crate) max_processes: u64,
    pub(crate) memory: Option<u64>,
}

/// `mkdir`, where an existing directory is fine.
fn create_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn procs_files(dirs: &[PathBuf]) -> io::Result<Vec<CString>> {
    dirs.iter()
        .map(|dir| {
            CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(|_| io::Error::other("cgroup path contains a NUL byte"))
        })
        .collect()
}

/// Moves the calling process into each cgroup. Runs in a forked child before `exec`:
/// only `open`, `write` and `close` on prepared paths, nothing that allocates.
pub(crate) fn join(procs_files: &[CString]) -> io::Result<()> {
    for file in procs_files {
        // SAFETY: plain syscalls on a valid NUL-terminated path and a 1-byte buffer.
        unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0" means the writing process itself, in v1 and v2.
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The cgroup directories of one job, shared by its instances in this process.
#[derive(Debug)]
pub(crate) struct JobCgroup {
    hierarchy: &'static CgroupHierarchy,
    job: String,
}

/// Live job directories of this process, so that one is not removed while another handle
/// for the same job is being made.
static JOBS: Mutex<Option<HashMap<String, Weak<JobCgroup>>>> = Mutex::new(None);

/// Distinguishes the instance cgroups this process creates.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

impl JobCgroup {
    /// The handle for `job`'s directories, created if needed.
    pub(crate) fn for_job(hierarchy: &'static CgroupHierarchy, job: &str) -> io::Result<Arc<Self>> {
        let mut jobs = JOBS.lock().unwrap_or_else(PoisonError::into_inner);
        let jobs = jobs.get_or_insert_with(HashMap::new);
        if let Some(existing) = jobs.get(job).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let handle = Arc::new(JobCgroup {
            hierarchy,
            job: job.to_owned(),
        });
        handle.create_dirs()?;
        jobs.insert(job.to_owned(), Arc::downgrade(&handle));
        Ok(handle)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchy.job_dirs(&self.job)
    }

    fn create_dirs(&self) -> io::Result<()> {
        for dir in self.dirs() {
            create_dir(&dir)?;
            if self.hierarchy.version == CgroupVersion::V2 {
                std::fs::write(dir.join("cgroup.subtree_control"), "+pids +memory")?;
            }
        }
        Ok(())
    }

    /// Creates an empty cgroup for `instance` with `limits`.
    pub(crate) fn create_instance(
        self: &Arc<Self>,
        instance: &str,
        limits: CgroupLimits,
    ) -> io::Result<InstanceCgroup> {
        let name = format!(
            "{instance}.{}.{}",
            std::process::id(),
            NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let hierarchy = self.hierarchy;
        let mut cgroup = InstanceCgroup {
            job: Some(Arc::clone(self)),
            version: hierarchy.version,
            pids_dir: hierarchy
                .pids_root
                .as_ref()
                .map(|root| root.join(&self.job).join(&name)),
            memory_dir: hierarchy
                .memory_root
                .as_ref()
                .map(|root| root.join(&self.job).join(&name)),
            procs_files: Vec::new(),
        };
        for dir in cgroup.dirs() {
            match std::fs::create_dir(&dir) {
                // Another process removed the job directory after its last instance.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    self.create_dirs()?;
                    std::fs::create_dir(&dir)?;
                }
                other => other?,
            }
        }
        if let Some(dir) = &cgroup.pids_dir {
            std::fs::write(dir.join("pids.max"), limits.max_processes.to_string())?;
        }
        if let (Some(dir), Some(memory)) = (&cgroup.memory_dir, limits.memory) {
            let memory = memory.to_string();
            match hierarchy.version {
                CgroupVersion::V1 => {
                    std::fs::write(dir.join("memory.limit_in_bytes"), &memory)?;
                    // Without swap accounting the file is missing; then there is no swap
                    // limit to set.
                    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), &memory);
                }
                CgroupVersion::V2 => {
                    std::fs::write(dir.join("memory.max"), &memory)?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    // An OOM kill takes the whole instance, not one random process of it.
                    let _ = std::fs::write(dir.join("memory.oom.group"), "1");
                }
            }
        }
        cgroup.procs_files = procs_files(&cgroup.dirs())?;
        Ok(cgroup)
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        let mut jobs = JOBS.lock().unwrap_or_else(PoisonError::into_inner);
        let jobs = jobs.get_or_insert_with(HashMap::new);
        // A new handle for the job may have been made since the last one went.
        if jobs
            .get(&self.job)
            .is_some_and(|weak| weak.strong_count() > 0)
        {
            return;
        }
        jobs.remove(&self.job);
        for dir in self.dirs() {
            // Busy when another platform process still has instances of this job.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// One instance's cgroup(s): one directory under v2, up to two (pids, memory) under v1.
#[derive(Debug)]
pub(crate) struct InstanceCgroup {
    /// `None` once removed.
    job: Option<Arc<JobCgroup>>,
    version: CgroupVersion,
    pids_dir: Option<PathBuf>,
    memory_dir: Option<PathBuf>,
    procs_files: Vec<CString>,
}

/// Kills every process of one instance's cgroup.
#[derive(Debug, Clone)]
pub(crate) struct CgroupKiller {
    pub(super) version: CgroupVersion,
    pub(super) dir: PathBuf,
}

impl CgroupKiller {
    /// SIGKILL to every process in the cgroup: `cgroup.kill` where the kernel has it,
    /// else rounds of listing and killing until the list is empty (bounded).
    pub(crate) fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for _ in 0..KILL_ROUNDS {
            let processes = processes_in(&self.dir);
            if processes.is_empty() {
                return;
            }
            for pid in processes {
                // A process may have exited since the list was read: ESRCH is fine.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn processes_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Counters of an instance's cgroup, to tell which limit it hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LimitEvents {
    /// Processes the kernel's OOM killer killed in the cgroup.
    pub(crate) oom_kills: u64,
    /// Forks refused because of `pids.max`.
    pub(crate) process_limit_hits: u64,
}

impl InstanceCgroup {
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for dir in [&self.pids_dir, &self.memory_dir].into_iter().flatten() {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }

    /// The `cgroup.procs` files the child writes itself into (see [`join`]).
    pub(crate) fn procs_files(&self) -> &[CString] {
        &self.procs_files
    }

    pub(crate) fn limits_memory(&self) -> bool {
        self.memory_dir.is_some()
    }

    /// Moves process `pid` into this cgroup, from outside: for an instance forked by a
    /// zygote, which waits until this is done before it runs any function code.
    pub(crate) fn adopt(&self, pid: Pid) -> io::Result<()> {
        for dir in self.dirs() {
            std::fs::write(dir.join("cgroup.procs"), pid.as_raw().to_string())?;
        }
        Ok(())
    }

    /// A directory of this cgroup, for reading its process list.
    fn any_dir(&self) -> Option<&Path> {
        self.pids_dir.as_deref().or(self.memory_dir.as_deref())
    }

    /// Pids of the processes in the cgroup.
    pub(crate) fn processes(&self) -> Vec<i32> {
        self.any_dir().map(processes_in).unwrap_or_default()
    }

    /// A handle that kills every process in the cgroup, usable while the cgroup itself
    /// is borrowed elsewhere. `None` once removed.
    pub(crate) fn killer(&self) -> Option<CgroupKiller> {
        self.job.as_ref()?;
        Some(CgroupKiller {
            version: self.version,
            dir: self.any_dir()?.to_path_buf(),
        })
    }

    /// SIGKILL to every process in the cgroup (see [`CgroupKiller::kill_all`]).
    pub(crate) fn kill_all(&self) {
        if let Some(killer) = self.killer() {
            killer.kill_all();
        }
    }

    /// What the kernel counted: OOM kills and refused forks.
    pub(crate) fn events(&self) -> LimitEvents {
        let counter = |file: Option<PathBuf>, key: &str| -> u64 {
            file.and_then(|file| std::fs::read_to_string(file).ok())
                .and_then(|text| {
                    text.lines().find_map(|line| {
                        let (name, value) = line.split_once(' ')?;
                        (name == key).then(|| value.trim().parse().ok()).flatten()
                    })
                })
                .unwrap_or(0)
        };
        let memory_events = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        LimitEvents {
            oom_kills: counter(
                self.memory_dir.as_ref().map(|d| d.join(memory_events)),
                "oom_kill",
            ),
            process_limit_hits: counter(
                self.pids_dir.as_ref().map(|d| d.join("pids.events")),
                "max",
            ),
        }
    }

    /// Kills everything in the cgroup, waits (bounded) until it is empty and removes it.
    pub(crate) async fn remove(&mut self) {
        if self.job.is_none() {
            return;
        }
        let deadline = tokio::time::Instant::now() + REMOVE_BOUND;
        let mut pause = Duration::from_millis(1);
        loop {
            self.kill_all();
            if self.try_remove_dirs() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    cgroup = ?self.any_dir(),
                    processes = ?self.processes(),
                    "function cgroup still has processes after SIGKILL; leaving it"
                );
                self.job = None;
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Removes the directories that are empty; true when none is left.
    fn try_remove_dirs(&mut self) -> bool {
        let mut left = false;
        for dir in self.dirs() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(_) => left = true,
            }
        }
        if !left {
            self.job = None;
        }
        !left
    }
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        if self.job.is_none() {
            return;
        }
        self.kill_all();
        if self.try_remove_dirs() {
            return;
        }
        // The killed processes take a moment to go; finish in the background.
        let mut rest = InstanceCgroup {
            job: self.job.take(),
            version: self.version,
            pids_dir: self.pids_dir.take(),
            memory_dir: self.memory_dir.take(),
            procs_files: Vec::new(),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { rest.remove().await });
        } else {
            tracing::warn!(cgroup = ?rest.any_dir(), "function cgroup not empty at drop; leaving it");
            rest.job = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
