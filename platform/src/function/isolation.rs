//! What isolates a function process beyond its process group, decided once per platform
//! process, and the code that applies it in the forked child before `exec`.
//!
//! | mechanism | used when | what it gives |
//! |---|---|---|
//! | cgroups ([`super::cgroup`]) | cgroup v2 or v1 `pids`/`memory` are writable | `max_processes`, `memory` enforced by the kernel, every process of an instance killed at its end |
//! | a network namespace | `unshare(CLONE_NEWNET)` works (needs `CAP_SYS_ADMIN`) and the job says `network = false` | no interfaces but a loopback of its own |
//! | dropped capabilities | the platform holds `CAP_SETPCAP` (it runs as root) | a root function keeps uid 0 but has no capability: it cannot read the memory or environment of a non-dumpable process (see [`harden_platform_process`]), load modules, mount, change limits, … |
//! | a uid and gid per job ([`super::identity`]) | the platform runs as root | the function is never root: it cannot touch root-owned files, other jobs' files or processes, or its cgroup's control files; it reads its job folder through a staged read-only copy ([`super::bundle`]) |
//! | a PID namespace ([`super::pid_namespace`]) | `unshare(CLONE_NEWPID)` works (`CAP_SYS_ADMIN`) and the instance gets a mount namespace (for its `/proc`) | only its own processes in sight; the platform and other jobs cannot be named, signalled or traced; everything it started dies with the instance |
//! | a user namespace for a preload parent ([`super::user_namespace`]) | a job's user may make one (and mount and PID namespaces in it), with a user of its own, mount and PID namespaces | the instances forked by a preload parent each get a PID namespace and a private `/tmp`, while the parent holds no privilege outside its namespace |
//! | a mount namespace ([`super::namespaces`]) | `unshare(CLONE_NEWNS)` and mounting work (`CAP_SYS_ADMIN`) | a private `/tmp` (scratch), no cgroup file system, no host `/run` with `network = false`, the bundle read-only |
//! | `PR_SET_NO_NEW_PRIVS` | always | no privileges gained through set-uid programs |
//! | a seccomp filter ([`super::syscalls`]) | the kernel has seccomp | no `ptrace`, `mount`, namespaces, `bpf`, module or `kexec` loading, keyrings, … |
//! | rlimits | always | open files, CPU seconds, no core dumps; address space when no memory cgroup |
//!
//! Invariant: whatever is unavailable is reported once, at warn level, when a runner is
//! first made, and [`Isolation::missing`] names it; a job with `function.isolation =
//! "strict"` (the default) then refuses to start its function, one with `"best_effort"`
//! runs it with what is available.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use nix::libc;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::cgroup::CgroupHierarchy;
use super::identity::{IdRange, JobIdentity};
use super::namespaces::{MountPlan, mount_namespace_works, switch_user};
use super::pid_namespace::pid_namespace_works;
use super::protocol::InvokeError;
use super::syscalls::SyscallFilter;
use super::user_namespace::{UserNamespace, user_namespace_works};
use crate::spec::{FunctionSpec, IsolationLevel};

/// Isolation mechanisms this platform process can use.
#[derive(Debug)]
pub(crate) struct Isolation {
    pub(crate) cgroups: Option<CgroupHierarchy>,
    /// Whether a child can get a network namespace of its own.
    pub(crate) network_namespaces: bool,
    /// The highest capability number, when the platform has capabilities to drop.
    pub(crate) drop_capabilities: Option<u32>,
    /// The ids functions run as, when the platform may switch users (it runs as root)
    /// and the configured range is usable; else why not.
    pub(crate) function_ids: Result<IdRange, String>,
    /// Whether a child can get a mount namespace of its own.
    pub(crate) mount_namespaces: bool,
    /// Whether a child can get a PID namespace of its own.
    pub(crate) pid_namespaces: bool,
    /// Whether a preload parent, as the job's user, can get a user namespace of its own
    /// and make mount and PID namespaces in it, for the instances it forks.
    pub(crate) user_namespaces: bool,
    /// The system call filter every function gets, or why there is none.
    pub(crate) syscall_filter: Result<SyscallFilter, String>,
}

/// The isolation available here, detected on first use.
pub(crate) fn isolation() -> &'static Isolation {
    static ISOLATION: OnceLock<Isolation> = OnceLock::new();
    ISOLATION.get_or_init(Isolation::detect)
}

/// Makes the platform process non-dumpable (`PR_SET_DUMPABLE = 0`), so that processes
/// without `CAP_SYS_PTRACE`, including every function (their capabilities are dropped),
/// cannot read its environment, memory or file descriptors through `/proc/<pid>/…`, even
/// when they run as the same user. Side effects: no core dumps of the platform, and a
/// debugger needs root to attach.
///
/// It also detects, once, which isolation this host allows (cgroups, network namespaces,
/// capabilities; 10 to 20 ms of blocking work, warnings for what is missing), which the
/// first [`FunctionRunner::new`](super::FunctionRunner::new) would otherwise do on the
/// async runtime. Call it once at start, before any function runs.
pub fn harden_platform_process() -> io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(io::Error::from)?;
    isolation();
    Ok(())
}

impl Isolation {
    fn detect() -> Self {
        let cgroups = match CgroupHierarchy::detect() {
            Ok(hierarchy) => {
                tracing::info!(
                    version = ?hierarchy.version(),
                    processes = hierarchy.limits_processes(),
                    memory = hierarchy.limits_memory(),
                    "function instances get cgroups"
                );
                Some(hierarchy)
            }
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "cgroups are not usable; function memory limits fall back to RLIMIT_AS, \
                     function.max_processes is not enforced, and processes that leave a \
                     function's process group are not killed with it"
                );
                None
            }
        };
        let network_namespaces = match probe_in_child(|| enter_network_namespace().is_ok()) {
            Ok(true) => true,
            outcome => {
                tracing::warn!(
                    ?outcome,
                    "network namespaces are not usable (they need CAP_SYS_ADMIN); functions \
                     with network = false still have network access"
                );
                false
            }
        };
        let drop_capabilities = capabilities_to_drop();
        let function_ids = if !may_switch_users() {
            Err("the platform does not run as root (CAP_SETUID, CAP_SETGID and CAP_CHOWN), so functions run as its own user".to_owned())
        } else {
            IdRange::from_environment().map_err(|error| error.to_string())
        };
        if let Err(reason) = &function_ids {
            tracing::warn!(%reason, "functions cannot get a user of their own");
        }
        let mount_namespaces = match probe_in_child(mount_namespace_works) {
            Ok(true) => true,
            outcome => {
                tracing::warn!(
                    ?outcome,
                    "mount namespaces are not usable (they need CAP_SYS_ADMIN); functions see \
                     the host's /tmp, /run and cgroup file system"
                );
                false
            }
        };
        let pid_namespaces = match probe_in_child(pid_namespace_works) {
            Ok(true) => true,
            outcome => {
                tracing::warn!(
                    ?outcome,
                    "PID namespaces are not usable (they need CAP_SYS_ADMIN); functions see \
                     the processes of their own user, and a process a function leaves behind \
                     outside its cgroup survives its instance"
                );
                false
            }
        };
        let user_namespaces = match &function_ids {
            Ok(range) => {
                let identity = range.first_identity();
                let works = UserNamespace::new(identity)
                    .map_err(|error| error.to_string())
                    .and_then(|namespace| {
                        probe_in_child(|| user_namespace_works(&namespace, identity))
                    });
                match works {
                    Ok(true) => true,
                    outcome => {
                        tracing::warn!(
                            ?outcome,
                            "user namespaces are not usable by a job's user; instances forked \
                             by a preload process (function.preload) share its PID namespace \
                             and /tmp"
                        );
                        false
                    }
                }
            }
            Err(_) => false,
        };
        if nix::sys::prctl::get_dumpable().unwrap_or(true) {
            tracing::warn!(
                "the platform process is dumpable: functions running as the same user can \
                 read its environment through /proc; call harden_platform_process at start"
            );
        }
        let syscall_filter = SyscallFilter::build()
            .map_err(|error| error.to_string())
            .and_then(
                |filter| match probe_in_child(|| filter.apply_in_child().is_ok()) {
                    Ok(true) => Ok(filter),
                    outcome => Err(format!("the kernel refused it: {outcome:?}")),
                },
            );
        if let Err(reason) = &syscall_filter {
            tracing::warn!(%reason, "functions get no system call filter");
        }
        Isolation {
            cgroups,
            network_namespaces,
            drop_capabilities,
            function_ids,
            mount_namespaces,
            pid_namespaces,
            user_namespaces,
            syscall_filter,
        }
    }

    /// Whether the instances a preload parent forks get a PID namespace and a private
    /// `/tmp` each: it needs a user namespace of its own, and the job a user of its own
    /// (`job_user`) with a mount namespace.
    pub(crate) fn forks_get_namespaces(&self, job_user: bool) -> bool {
        job_user && self.user_namespaces && self.mount_namespaces && self.pid_namespaces
    }

    /// With `function.isolation = "strict"`, the error that refuses to start a function
    /// with `spec` when any protection is missing here: permanent, since no retry changes
    /// the host (a retried or bisected batch would end in the dead-letter destination).
    pub(crate) fn refuse_unless_allowed(&self, spec: &FunctionSpec) -> Result<(), InvokeError> {
        let missing = self.missing(spec);
        if missing.is_empty() || spec.isolation != IsolationLevel::Strict {
            return Ok(());
        }
        Err(InvokeError::Refused {
            reason: format!(
                "function.isolation = \"strict\" and this host cannot give the function: {}; \
                 fix the host (run sluice as root, with CAP_SYS_ADMIN in a container) or set \
                 function.isolation = \"best_effort\"",
                missing.join("; ")
            ),
        })
    }

    /// The protections a function with `spec` would lack on this host, each named with
    /// what it stops; empty when it gets them all.
    pub(crate) fn missing(&self, spec: &FunctionSpec) -> Vec<String> {
        let mut missing = Vec::new();
        if let Err(reason) = &self.function_ids {
            missing.push(format!("a user of its own ({reason})"));
        }
        if !self.mount_namespaces {
            missing.push(
                "a mount namespace (private /tmp, hidden cgroup file system and host sockets)"
                    .to_owned(),
            );
        }
        if !(self.pid_namespaces && self.mount_namespaces) {
            missing.push(
                "a PID namespace (other processes in sight, leftovers outliving the instance)"
                    .to_owned(),
            );
        }
        if !spec.preload.is_empty() && !self.forks_get_namespaces(self.function_ids.is_ok()) {
            missing.push(
                "a PID namespace and a private /tmp per preloaded instance (function.preload: \
                 the instances of the job would see and could signal each other and the \
                 preload process, and share one /tmp)"
                    .to_owned(),
            );
        }
        if !spec.network && !self.network_namespaces {
            missing.push("a network namespace (network = false is not enforced)".to_owned());
        }
        if let Err(reason) = &self.syscall_filter {
            missing.push(format!("a system call filter ({reason})"));
        }
        if self.drop_capabilities.is_none() {
            missing.push("dropping capabilities (the platform holds no CAP_SETPCAP)".to_owned());
        }
        match &self.cgroups {
            None => missing.push(
                "cgroups (function.max_processes is not enforced; memory falls back to RLIMIT_AS)"
                    .to_owned(),
            ),
            Some(cgroups) if !cgroups.limits_processes() => {
                missing.push("the cgroup pids controller (function.max_processes)".to_owned());
            }
            Some(_) => {}
        }
        missing
    }
}

/// Whether this process holds what switching a child to another user and staging files
/// for it takes: CAP_CHOWN (0), CAP_SETGID (6) and CAP_SETUID (7).
fn may_switch_users() -> bool {
    effective_capabilities().is_some_and(|caps| caps & 0b1100_0001 == 0b1100_0001)
}

fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The highest capability number when this process may drop capabilities from the
/// bounding set (it holds `CAP_SETPCAP`), else `None`.
fn capabilities_to_drop() -> Option<u32> {
    const CAP_SETPCAP: u32 = 8;
    let effective = effective_capabilities()?;
    if effective & (1 << CAP_SETPCAP) == 0 {
        return None;
    }
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .or(Some(63))
}

/// Runs `check` in a forked child and reports whether it returned true.
fn probe_in_child(check: impl FnOnce() -> bool) -> Result<bool, String> {
    // SAFETY: the child of a possibly multi-threaded process may only make
    // async-signal-safe calls; `check` makes raw syscalls only, then the child `_exit`s.
    match unsafe { nix::unistd::fork() } {
        Err(errno) => Err(format!("cannot fork a probe process: {errno}")),
        Ok(ForkResult::Child) => {
            let code = if check() { 0 } else { 1 };
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(_, code)) => return Ok(code == 0),
                other => return Err(format!("probe process ended as {other:?}")),
            }
        },
    }
}

/// Everything the child does between `fork` and `exec`, as plain data: the closure that
/// runs it must not allocate.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// The platform's pid, to notice that it died before `PR_SET_PDEATHSIG` was set.
    pub(crate) parent: Pid,
    /// `cgroup.procs` files to join.
    pub(crate) cgroup_procs: Vec<CString>,
    /// Whether the instance gets a PID namespace of its own (its mounts then include a
    /// `/proc` of that namespace).
    pub(crate) new_pids: bool,
    /// The sealed memory file holding the namespace's init and relay program
    /// ([`super::pid_namespace`]), when the host allows one.
    pub(crate) init_program: Option<RawFd>,
    pub(crate) new_network: bool,
    /// `RLIMIT_AS` in bytes, when memory is not limited by a cgroup.
    pub(crate) address_space: Option<u64>,
    pub(crate) open_files: u64,
    pub(crate) cpu_seconds: Option<u64>,
    /// Drop every capability up to this number.
    pub(crate) drop_capabilities: Option<u32>,
    /// The mount namespace to enter, when the job gets one.
    pub(crate) mounts: Option<MountPlan>,
    /// The user to become, when the job gets one of its own.
    pub(crate) identity: Option<JobIdentity>,
    /// For a preload parent whose instances get namespaces of their own: the user
    /// namespace it enters as the job's user ([`super::user_namespace`]).
    pub(crate) user_namespace: Option<UserNamespace>,
    /// Installed last, right before `exec`.
    pub(crate) syscall_filter: Option<&'static SyscallFilter>,
}

impl ChildSetup {
    /// Runs in the forked child. Only async-signal-safe syscalls through thin wrappers
    /// (nix, libc), on data prepared before the fork; errors are built with
    /// `io::Error::from_raw_os_error`/`last_os_error`, which do not allocate.
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The platform may have died between fork and prctl; then nobody would kill us.
        if nix::unistd::getppid() != self.parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if self.new_pids {
            // From here on, this is the function process, in the new namespace.
            super::pid_namespace::enter_in_child(self.init_program)?;
        }
        super::cgroup::join(&self.cgroup_procs)?;
        close_inherited_descriptors_on_exec()?;
        if self.new_network {
            enter_network_namespace()?;
        }
        if let Some(memory) = self.address_space {
            lower_limit(Resource::RLIMIT_AS, memory, memory)?;
        }
        lower_limit(Resource::RLIMIT_NOFILE, self.open_files, self.open_files)?;
        if let Some(seconds) = self.cpu_seconds {
            // SIGXCPU at the soft limit, SIGKILL a second later.
            lower_limit(Resource::RLIMIT_CPU, seconds, seconds.saturating_add(1))?;
        }
        lower_limit(Resource::RLIMIT_CORE, 0, 0)?;
        if let Some(mounts) = &self.mounts {
            mounts.apply_in_child()?;
        }
        if let Some(last) = self.drop_capabilities {
            drop_bounding_capabilities(last, None)?;
        }
        // After everything that needs root, before the capability sets are emptied
        // (switching users needs CAP_SETUID and CAP_SETGID).
        if let Some(identity) = self.identity {
            switch_user(identity)?;
        }
        match &self.user_namespace {
            // A preload parent: CAP_SYS_ADMIN in a user namespace of its own, nothing else.
            Some(namespace) => namespace.enter_in_child(self.drop_capabilities.unwrap_or(63))?,
            None if self.drop_capabilities.is_some() => set_capability_sets(0)?,
            None => {}
        }
        nix::sys::prctl::set_no_new_privs()?;
        match (self.syscall_filter, &self.user_namespace) {
            (Some(filter), Some(_)) => filter.apply_preload_parent_in_child()?,
            (Some(filter), None) => filter.apply_in_child()?,
            (None, _) => {}
        }
        Ok(())
    }
}

/// Marks every descriptor above stderr close-on-exec, so the function starts with its
/// three pipes and nothing else: not the platform's sockets to brokers and stores, and
/// not what the platform itself inherited without `O_CLOEXEC` (a supervisor's pipes, a
/// shell's descriptors). Runs before `RLIMIT_NOFILE` is lowered.
fn close_inherited_descriptors_on_exec() -> io::Result<()> {
    // SAFETY: plain syscalls on integers.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return Ok(());
        }
        // Kernels before 5.11 have no CLOSE_RANGE_CLOEXEC: mark each open descriptor.
        let (open_files, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
        let last = libc::c_int::try_from(open_files.min(1 << 20)).unwrap_or(libc::c_int::MAX);
        for fd in 3..last {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Sets a limit, never above the current hard limit (raising it needs privileges).
fn lower_limit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let (_, current_hard) = getrlimit(resource)?;
    let hard = hard.min(current_hard);
    setrlimit(resource, soft.min(hard), hard)?;
    Ok(())
}

/// A network namespace of its own, with only a loopback interface, brought up.
fn enter_network_namespace() -> io::Result<()> {
    // SAFETY: plain syscalls; `request` is a zeroed C struct owned by this frame.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        let mut result = libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        }
        let error = io::Error::last_os_error();
        libc::close(socket);
        if result != 0 {
            return Err(error);
        }
    }
    Ok(())
}

#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapabilityData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Empties the bounding set (but for `keep`) and the ambient capability set, so no
/// program `exec`ed later can gain a capability, even as uid 0 or through file
/// capabilities.
pub(super) fn drop_bounding_capabilities(last: u32, keep: Option<u32>) -> io::Result<()> {
    // SAFETY: plain prctl syscalls on values owned by this frame.
    unsafe {
        for capability in 0..=libc::c_ulong::from(last) {
            if keep.is_some_and(|keep| libc::c_ulong::from(keep) == capability) {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 {
                let error = io::Error::last_os_error();
                // A capability this kernel does not know.
                if error.raw_os_error() != Some(libc::EINVAL) {
                    return Err(error);
                }
            }
        }
        // Fails with EINVAL on kernels without ambient capabilities; none to clear then.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    Ok(())
}

/// Sets the inheritable, permitted and effective capability sets to `capabilities` (a
/// bit per capability number); with 0, the program `exec`ed next has no capability even
/// as uid 0.
pub(super) fn set_capability_sets(capabilities: u64) -> io::Result<()> {
    let half = |shift: u32| {
        let bits = (capabilities >> shift) as u32;
        CapabilityData {
            effective: bits,
            permitted: bits,
            inheritable: bits,
        }
    };
    // SAFETY: a plain capset syscall on values owned by this frame.
    unsafe {
        let header = CapabilityHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [half(0), half(32)];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
