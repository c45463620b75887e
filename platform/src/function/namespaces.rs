//! The function's own view of the file system (a mount namespace) and its own user,
//! applied in the forked child before `exec`, while it still runs as root.
//!
//! In the mount namespace of an instance:
//! - `/tmp` (and `/var/tmp`, the same folder) is a private tmpfs of at most
//!   [`SCRATCH_SIZE`], owned by the job's uid: the instance's scratch space (`$TMPDIR`),
//!   gone with the instance; the host's `/tmp` is not visible (a preloaded instance
//!   mounts its own `/tmp`, `/var/tmp` and `/dev/shm` over its zygote's, in a mount
//!   namespace made from the zygote's: `zygote/zygote.py`);
//! - `/proc` is a new instance for the instance's PID namespace
//!   ([`super::pid_namespace`]; the zygote's, for a zygote) that shows only the processes
//!   of the job's own uid (`hidepid=invisible`): no command line, environment or file of
//!   the platform or of other jobs;
//! - `/dev/shm` is a private tmpfs, so instances cannot share memory through it;
//! - `/sys/fs/cgroup` is an empty read-only tmpfs: no cgroup file to write, none to read;
//! - with `network = false`, `/run` (and so `/var/run`) is an empty read-only tmpfs: no
//!   Unix socket of the host's services (PostgreSQL, MariaDB, D-Bus, Docker) is reachable;
//! - the bundle is mounted read-only over itself and is the working directory;
//! - everything else is the host's, with the host's permissions, which a non-root uid
//!   without capabilities cannot get around.
//!
//! Mount events do not propagate back to the host (`/` is made private first).
//!
//! Invariant: everything here runs between `fork` and `exec`: plain syscalls on data
//! prepared before the fork, nothing that allocates.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use nix::libc;

use super::identity::JobIdentity;

/// Most bytes an instance may keep in its private `/tmp`.
pub(crate) const SCRATCH_SIZE: u64 = 256 << 20;
/// Most bytes in an instance's private `/dev/shm`.
pub(crate) const SHM_SIZE: u64 = 16 << 20;

/// One mount, prepared before the fork.
#[derive(Debug)]
struct Mount {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
}

/// The mounts of one instance's namespace, prepared before the fork.
#[derive(Debug)]
pub(crate) struct MountPlan {
    mounts: Vec<Mount>,
    /// The working directory, entered again once the bundle is mounted over itself.
    workdir: CString,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} contains a NUL byte", path.display())))
}

fn c_text(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::other("mount option contains a NUL byte"))
}

/// A directory that exists and is not a symbolic link (mounting over a link would
/// mount over its target).
fn real_dir(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir())
}

impl MountPlan {
    /// The namespace for an instance of the job `identity` whose bundle is `bundle`;
    /// `hide_run` hides `/run` (for `network = false`).
    pub(crate) fn new(bundle: &Path, identity: JobIdentity, hide_run: bool) -> io::Result<Self> {
        let mut plan = MountPlan {
            mounts: Vec::new(),
            workdir: c_path(bundle)?,
        };
        let nothing = libc::MS_NOSUID | libc::MS_NODEV;
        plan.tmpfs(
            "/tmp",
            nothing,
            &format!(
                "size={SCRATCH_SIZE},mode=0700,uid={},gid={}",
                identity.uid, identity.gid
            ),
        )?;
        if real_dir("/var/tmp") {
            plan.bind("/tmp", "/var/tmp", 0)?;
        }
        if real_dir("/dev/shm") {
            plan.tmpfs(
                "/dev/shm",
                nothing | libc::MS_NOEXEC,
                &format!(
                    "size={SHM_SIZE},mode=0700,uid={},gid={}",
                    identity.uid, identity.gid
                ),
            )?;
        }
        // A /proc of its own that lists only the processes of the job's uid: not the
        // platform's, not other jobs' (their command lines, environments, open files).
        plan.mounts.push(Mount {
            source: c_text("proc")?,
            target: c_text("/proc")?,
            fstype: Some(c_text("proc")?),
            flags: nothing | libc::MS_NOEXEC,
            data: Some(c_text("hidepid=invisible")?),
        });
        if real_dir("/sys/fs/cgroup") {
            plan.tmpfs(
                "/sys/fs/cgroup",
                nothing | libc::MS_NOEXEC | libc::MS_RDONLY,
                "size=4k,mode=0555",
            )?;
        }
        if hide_run {
            for run in ["/run", "/var/run"].into_iter().filter(|dir| real_dir(dir)) {
                plan.tmpfs(
                    run,
                    nothing | libc::MS_NOEXEC | libc::MS_RDONLY,
                    "size=4k,mode=0555",
                )?;
            }
        }
        let bundle = bundle
            .to_str()
            .ok_or_else(|| io::Error::other("bundle path is not UTF-8"))?;
        plan.bind(bundle, bundle, libc::MS_RDONLY | nothing)?;
        Ok(plan)
    }

    fn tmpfs(&mut self, target: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
        self.mounts.push(Mount {
            source: c_text("tmpfs")?,
            target: c_text(target)?,
            fstype: Some(c_text("tmpfs")?),
            flags,
            data: Some(c_text(data)?),
        });
        Ok(())
    }

    /// A bind mount; with `flags` (read-only, …) a second, remounting step applies them.
    fn bind(&mut self, source: &str, target: &str, flags: libc::c_ulong) -> io::Result<()> {
        self.mounts.push(Mount {
            source: c_text(source)?,
            target: c_text(target)?,
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        });
        if flags != 0 {
            self.mounts.push(Mount {
                source: c_text("none")?,
                target: c_text(target)?,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REMOUNT | flags,
                data: None,
            });
        }
        Ok(())
    }

    /// Enters a new mount namespace and mounts the plan. In the forked child only.
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        // SAFETY: plain syscalls on NUL-terminated strings owned by `self`.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for mount in &self.mounts {
                let fstype = mount
                    .fstype
                    .as_ref()
                    .map_or(std::ptr::null(), |f| f.as_ptr());
                let data = mount
                    .data
                    .as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr().cast());
                if libc::mount(
                    mount.source.as_ptr(),
                    mount.target.as_ptr(),
                    fstype,
                    mount.flags,
                    data,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::chdir(self.workdir.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Whether a child can get a mount namespace of its own and mount a tmpfs in it (needs
/// `CAP_SYS_ADMIN`). Runs in a probe child.
pub(crate) fn mount_namespace_works() -> bool {
    // SAFETY: plain syscalls on static strings, in a forked probe child.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=4k".as_ptr().cast(),
            ) == 0
    }
}

/// Becomes `identity`: no supplementary groups, then the gid, then the uid (real,
/// effective and saved), so nothing of root is left to return to. In the forked child,
/// after everything that needs root.
pub(crate) fn switch_user(identity: JobIdentity) -> io::Result<()> {
    // SAFETY: plain syscalls on integers.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(identity.gid, identity.gid, identity.gid) != 0
            || libc::setresuid(identity.uid, identity.uid, identity.uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
