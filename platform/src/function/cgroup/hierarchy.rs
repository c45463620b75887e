//! Finding the cgroup hierarchies this process can put function instances in, once.
//!
//! cgroup v2 is used when the platform's cgroup offers the `pids` and `memory` controllers
//! (they are enabled in the subtree; if the platform's cgroup holds processes, which v2
//! forbids for a cgroup whose children use controllers, and the platform is its only
//! process, the platform moves itself into `<its cgroup>/sluice-platform` first).
//! Otherwise the v1 `pids` and `memory` hierarchies are used, whichever exist. Detection
//! ends with a probe: a forked child joins a fresh cgroup with `pids.max = 1` and must
//! fail to fork, so a hierarchy is only used once its limit is seen to work; then instance
//! cgroups left by platform processes that are gone are emptied and removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::kill;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::{CgroupKiller, create_dir, join, procs_files};

/// Name of the directory under the platform's cgroup that holds every job.
const SLUICE_DIR: &str = "sluice";
/// Prefix of the folder a starting platform process probes in, `probe.<its pid>`.
const PROBE_PREFIX: &str = "probe.";
/// Where the platform moves itself under cgroup v2 when its own cgroup must stay empty.
const PLATFORM_LEAF: &str = "sluice-platform";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupVersion {
    V1,
    V2,
}

/// The cgroup directories this process puts function instances under.
#[derive(Debug)]
pub(crate) struct CgroupHierarchy {
    pub(super) version: CgroupVersion,
    /// `<platform's cgroup>/sluice` where `pids` is enforced (v2: the unified hierarchy).
    pub(super) pids_root: Option<PathBuf>,
    /// `<platform's cgroup>/sluice` where `memory` is enforced (v2: the same directory).
    pub(super) memory_root: Option<PathBuf>,
}

impl CgroupHierarchy {
    /// Finds usable cgroup hierarchies, prepares `<own cgroup>/sluice` and checks that a
    /// process-count limit actually holds. An error says why cgroups cannot be used.
    pub(crate) fn detect() -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let membership = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let plan = plan(&mountinfo, &membership, |dir| {
            std::fs::read_to_string(dir.join("cgroup.controllers")).ok()
        })?;
        let hierarchy = match plan {
            Plan::V2 { own } => set_up_v2(&own)?,
            Plan::V1 { pids, memory } => set_up_v1(pids.as_deref(), memory.as_deref())?,
        };
        hierarchy.probe()?;
        hierarchy.sweep_stale();
        Ok(hierarchy)
    }

    pub(crate) fn version(&self) -> CgroupVersion {
        self.version
    }

    pub(crate) fn limits_memory(&self) -> bool {
        self.memory_root.is_some()
    }

    pub(crate) fn limits_processes(&self) -> bool {
        self.pids_root.is_some()
    }

    /// The directories of `job`, one per hierarchy in use.
    pub(crate) fn job_dirs(&self, job: &str) -> Vec<PathBuf> {
        self.roots().iter().map(|root| root.join(job)).collect()
    }

    /// The `sluice` directories in use, one per hierarchy.
    pub(crate) fn roots(&self) -> Vec<&Path> {
        let mut roots: Vec<&Path> = Vec::new();
        for root in [&self.pids_root, &self.memory_root].into_iter().flatten() {
            if !roots.contains(&root.as_path()) {
                roots.push(root);
            }
        }
        roots
    }

    /// Kills and removes instance cgroups left by platform processes that are gone (a
    /// platform killed with SIGKILL leaves the processes its functions started), and their
    /// probe folders. A cgroup or probe folder whose platform pid is alive is left alone,
    /// whoever has that pid now.
    pub(super) fn sweep_stale(&self) {
        let own = std::process::id();
        let is_gone =
            |pid: u32| pid != own && kill(Pid::from_raw(pid as i32), None) == Err(Errno::ESRCH);
        for root in self.roots() {
            for job in subdirectories(root) {
                let name = job.file_name().and_then(|name| name.to_str());
                // Another platform process that starts at the same moment probes in
                // `probe.<its pid>`: removing that folder would switch its cgroups off.
                if let Some(pid) = name.and_then(|name| name.strip_prefix(PROBE_PREFIX)) {
                    if pid.parse().is_ok_and(is_gone) {
                        let _ = std::fs::remove_dir(&job);
                    }
                    continue;
                }
                for instance in subdirectories(&job) {
                    let platform = instance
                        .file_name()
                        .and_then(|name| name.to_str())
                        .and_then(platform_pid_of);
                    let stale = platform.is_some_and(is_gone);
                    if stale {
                        remove_stale(self.version, &instance);
                    }
                }
                // Busy while it still holds instances.
                let _ = std::fs::remove_dir(&job);
            }
        }
    }

    /// A forked child joins a new cgroup limited to one process and tries to fork: that
    /// must fail, or the `pids` limit does not hold and is not used.
    fn probe(&self) -> Result<(), String> {
        let name = format!("{PROBE_PREFIX}{}", std::process::id());
        let dirs: Vec<PathBuf> = self.roots().iter().map(|root| root.join(&name)).collect();
        for dir in &dirs {
            create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let outcome = self.probe_in(&dirs, &name);
        for dir in &dirs {
            let _ = std::fs::remove_dir(dir);
        }
        outcome
    }

    fn probe_in(&self, dirs: &[PathBuf], name: &str) -> Result<(), String> {
        if let Some(root) = &self.pids_root {
            write_file(&root.join(name).join("pids.max"), "1")?;
        }
        if let Some(root) = &self.memory_root {
            let limit = (1u64 << 30).to_string();
            write_file(&root.join(name).join(self.memory_limit_file()), &limit)?;
        }
        let procs = procs_files(dirs).map_err(|e| e.to_string())?;
        let expect_fork_to_fail = self.pids_root.is_some();
        // SAFETY: the child of a possibly multi-threaded process may only make
        // async-signal-safe calls; it writes to already-built paths, forks, and `_exit`s.
        match unsafe { nix::unistd::fork() } {
            Err(errno) => Err(format!("cannot fork a probe process: {errno}")),
            Ok(ForkResult::Child) => {
                let code = match join(&procs) {
                    Err(_) => 1,
                    // SAFETY: as above; the grandchild only `_exit`s.
                    Ok(()) => match unsafe { libc::fork() } {
                        -1 => 2,
                        0 => unsafe { libc::_exit(0) },
                        _ => 3,
                    },
                };
                // SAFETY: `_exit` is async-signal-safe and skips the parent's atexit state.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                let status = loop {
                    match waitpid(child, None) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        other => break other,
                    }
                };
                match (status, expect_fork_to_fail) {
                    (Ok(WaitStatus::Exited(_, 2)), true)
                    | (Ok(WaitStatus::Exited(_, 3)), false) => Ok(()),
                    (Ok(WaitStatus::Exited(_, 1)), _) => {
                        Err("a process cannot join a new cgroup".into())
                    }
                    (Ok(WaitStatus::Exited(_, 3)), true) => {
                        Err("pids.max = 1 did not stop a fork".into())
                    }
                    (other, _) => Err(format!("the cgroup probe process ended as {other:?}")),
                }
            }
        }
    }

    pub(super) fn memory_limit_file(&self) -> &'static str {
        match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        }
    }
}

/// Which directories to use, from `/proc/self/mountinfo` and `/proc/self/cgroup`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// The platform's own cgroup in the unified hierarchy.
    V2 { own: PathBuf },
    /// The platform's own cgroups in the v1 `pids` and `memory` hierarchies.
    V1 {
        pids: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

#[derive(Debug)]
pub(super) struct Mount {
    root: String,
    pub(super) mount_point: PathBuf,
    pub(super) fstype: String,
    super_options: String,
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let (fstype, _source, super_options) = (after.next()?, after.next()?, after.next()?);
            Some(Mount {
                root: unescape_mount_field(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mount_field(fields.get(4)?)),
                fstype: fstype.to_owned(),
                super_options: super_options.to_owned(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes.get(at + 1..at + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[at], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                at += 4;
            }
            (byte, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` shows it) under `mount`.
fn cgroup_dir(mount: &Mount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str())?
    };
    let relative = relative.trim_start_matches('/');
    Some(if relative.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(relative)
    })
}

pub(super) fn plan(
    mountinfo: &str,
    membership: &str,
    controllers_of: impl Fn(&Path) -> Option<String>,
) -> Result<Plan, String> {
    let mounts = parse_mountinfo(mountinfo);
    let memberships: Vec<(&str, &str)> = membership
        .lines()
        .filter_map(|line| {
            let (_id, rest) = line.split_once(':')?;
            rest.split_once(':')
        })
        .collect();

    let unified_path = memberships
        .iter()
        .find(|(controllers, _)| controllers.is_empty())
        .map(|(_, path)| *path);
    let unified = mounts.iter().filter(|mount| mount.fstype == "cgroup2");
    if let Some(path) = unified_path {
        for mount in unified {
            let Some(own) = cgroup_dir(mount, path) else {
                continue;
            };
            let offered = controllers_of(&own).unwrap_or_default();
            let offered: Vec<&str> = offered.split_whitespace().collect();
            if offered.contains(&"pids") && offered.contains(&"memory") {
                return Ok(Plan::V2 { own });
            }
        }
    }

    let v1_dir = |controller: &str| -> Option<PathBuf> {
        let mount = mounts.iter().find(|mount| {
            mount.fstype == "cgroup"
                && mount
                    .super_options
                    .split(',')
                    .any(|option| option == controller)
        })?;
        let (_, path) = memberships
            .iter()
            .find(|(controllers, _)| controllers.split(',').any(|name| name == controller))?;
        cgroup_dir(mount, path)
    };
    let (pids, memory) = (v1_dir("pids"), v1_dir("memory"));
    if pids.is_none() && memory.is_none() {
        return Err(
            "no cgroup hierarchy offers the pids or memory controller to this process".into(),
        );
    }
    Ok(Plan::V1 { pids, memory })
}

fn set_up_v2(own: &Path) -> Result<CgroupHierarchy, String> {
    let wanted = ["pids", "memory"];
    let enabled = |dir: &Path| -> bool {
        std::fs::read_to_string(dir.join("cgroup.subtree_control")).is_ok_and(|text| {
            let on: Vec<&str> = text.split_whitespace().collect();
            wanted.iter().all(|controller| on.contains(controller))
        })
    };
    if !enabled(own) {
        let enable = || write_file(&own.join("cgroup.subtree_control"), "+pids +memory");
        if let Err(first) = enable() {
            // v2 forbids processes in a cgroup whose children use controllers. When the
            // platform is alone in its cgroup it can step into a leaf of its own.
            let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
            let ours = std::process::id().to_string();
            if procs.split_whitespace().ne([ours.as_str()]) {
                return Err(format!(
                    "cannot enable pids and memory under {} ({first}), and other processes share the platform's cgroup",
                    own.display()
                ));
            }
            let leaf = own.join(PLATFORM_LEAF);
            create_dir(&leaf).map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
            write_file(&leaf.join("cgroup.procs"), &ours)?;
            enable()?;
        }
    }
    let root = own.join(SLUICE_DIR);
    create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if !enabled(&root) {
        write_file(&root.join("cgroup.subtree_control"), "+pids +memory")?;
    }
    Ok(CgroupHierarchy {
        version: CgroupVersion::V2,
        pids_root: Some(root.clone()),
        memory_root: Some(root),
    })
}

fn set_up_v1(pids: Option<&Path>, memory: Option<&Path>) -> Result<CgroupHierarchy, String> {
    let make_root = |own: &Path| -> Result<PathBuf, String> {
        let root = own.join(SLUICE_DIR);
        create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        Ok(root)
    };
    Ok(CgroupHierarchy {
        version: CgroupVersion::V1,
        pids_root: pids.map(make_root).transpose()?,
        memory_root: memory.map(make_root).transpose()?,
    })
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The platform pid in an instance cgroup's name, `<instance>.<platform pid>.<n>`.
pub(super) fn platform_pid_of(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '.');
    let (_sequence, pid, _instance) = (parts.next()?, parts.next()?, parts.next()?);
    pid.parse().ok()
}

/// Kills what is in a stale cgroup and removes it, waiting a little for the processes to
/// go; one still busy is left for the next start.
fn remove_stale(version: CgroupVersion, dir: &Path) {
    let killer = CgroupKiller {
        version,
        dir: dir.to_path_buf(),
    };
    for _ in 0..50 {
        killer.kill_all();
        if std::fs::remove_dir(dir).is_ok() {
            tracing::info!(cgroup = %dir.display(), "removed a function cgroup left by a platform process that is gone");
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tracing::warn!(cgroup = %dir.display(), "could not remove a stale function cgroup");
}

fn write_file(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}
