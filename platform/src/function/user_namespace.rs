//! A user namespace of its own for a job's preload parent ([`super::zygote`]), so that it
//! can give each instance it forks a PID namespace and a private `/tmp` of its own
//! without holding any privilege outside that namespace.
//!
//! The preload parent is spawned like any instance ([`super::sandbox`]): the platform
//! makes its mount and network namespaces, switches it to the job's user, and then, in
//! the forked child before `exec`, this module:
//! 1. makes the process dumpable again (a change of user cleared it, which leaves
//!    `/proc/self/uid_map` root's), then `unshare(CLONE_NEWUSER)`;
//! 2. maps only the job's uid and gid onto themselves (`deny` to `setgroups` first): the
//!    one mapping an unprivileged process may write for itself, so inside and outside
//!    the process is the job's user and nobody else can be named;
//! 3. keeps `CAP_SYS_ADMIN` (in that user namespace only) in its permitted, effective,
//!    inheritable and ambient sets and nothing else, and drops every other capability
//!    from its bounding set, so the capability survives the `exec` of the interpreter
//!    (under `no_new_privs`, as an ambient capability of a non-root user).
//!
//! What that capability allows: making mount and PID namespaces (the system call filter
//! allows no other kind) and mounting in mount namespaces made that way, which is what
//! `zygote.py` does per instance before it drops the capability and installs the full
//! filter. The parent's own mount namespace belongs to the platform's user namespace, so
//! its mounts (the hidden cgroup file system and `/run`, the read-only bundle) cannot be
//! changed or removed from inside, in its view or in any made from it (the kernel locks
//! them). Outside its user namespace it is the job's user without capabilities.
//!
//! Invariant: [`UserNamespace::enter_in_child`] runs between `fork` and `exec`: plain
//! syscalls on data prepared before the fork, nothing that allocates.

use std::ffi::{CStr, CString};
use std::io;

use nix::libc;

use super::identity::JobIdentity;

/// The one capability a preload parent keeps, in its own user namespace.
pub(crate) const CAP_SYS_ADMIN: u32 = 21;

/// The id maps of a job's user namespace, prepared before the fork.
#[derive(Debug)]
pub(crate) struct UserNamespace {
    uid_map: CString,
    gid_map: CString,
}

impl UserNamespace {
    /// The namespace mapping `identity` onto itself.
    pub(crate) fn new(identity: JobIdentity) -> io::Result<Self> {
        let map = |id: u32| {
            CString::new(format!("{id} {id} 1\n"))
                .map_err(|_| io::Error::other("an id map contains a NUL byte"))
        };
        Ok(UserNamespace {
            uid_map: map(identity.uid)?,
            gid_map: map(identity.gid)?,
        })
    }

    /// Enters a new user namespace as the (already switched to) job user and keeps
    /// `CAP_SYS_ADMIN` there across `exec`. `last_capability` is the highest capability
    /// number of the kernel. In the forked child only.
    pub(crate) fn enter_in_child(&self, last_capability: u32) -> io::Result<()> {
        // SAFETY: plain syscalls on integers and NUL-terminated strings owned by `self`.
        unsafe {
            if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0
                || libc::unshare(libc::CLONE_NEWUSER) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        write_file(c"/proc/self/setgroups", c"deny")?;
        write_file(c"/proc/self/uid_map", &self.uid_map)?;
        write_file(c"/proc/self/gid_map", &self.gid_map)?;
        super::isolation::drop_bounding_capabilities(last_capability, Some(CAP_SYS_ADMIN))?;
        super::isolation::set_capability_sets(1 << CAP_SYS_ADMIN)?;
        // SAFETY: a plain prctl on integers.
        unsafe {
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                libc::c_ulong::from(CAP_SYS_ADMIN),
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Writes `text` to the file `path` with one `write`.
fn write_file(path: &CStr, text: &CStr) -> io::Result<()> {
    let bytes = text.to_bytes();
    // SAFETY: plain syscalls on NUL-terminated strings and a byte slice we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let error = io::Error::last_os_error();
        libc::close(fd);
        if written != bytes.len() as isize {
            return Err(error);
        }
    }
    Ok(())
}

/// Whether a process switched to `identity` can make a user namespace, and in it a mount
/// and a PID namespace, and mount a tmpfs. Runs in a probe child (it switches users).
pub(crate) fn user_namespace_works(namespace: &UserNamespace, identity: JobIdentity) -> bool {
    if super::namespaces::switch_user(identity).is_err() || namespace.enter_in_child(63).is_err() {
        return false;
    }
    // SAFETY: a plain syscall in a forked probe child.
    let pid_namespace = unsafe { libc::unshare(libc::CLONE_NEWPID) == 0 };
    pid_namespace && super::namespaces::mount_namespace_works()
}
