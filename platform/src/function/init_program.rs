//! The init and relay program of an instance's PID namespace (`namespace_init/main.rs`,
//! built by `platform/build.rs`), embedded in the platform and put once per platform
//! process in a sealed memory file. Its descriptor goes to the preload process with each
//! fork request, whose instance relay starts init as `/proc/self/fd/3`; a spawned
//! instance's relay starts init from it and then becomes the relay program
//! ([`super::pid_namespace`]).
//!
//! Invariants: the memory file holds exactly the embedded program and can no longer be
//! changed (sealed against writes, growth and shrinking, and against new seals); its
//! mode is execute-only (`0o111`, owned by the platform's user, root when instances get
//! namespaces), so a job's user can run it but not read it, which makes the init it runs
//! non-dumpable from its `exec` on (see `namespace_init/main.rs`). The descriptor is
//! close-on-exec in the platform, so no spawned process inherits it.

use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::sync::OnceLock;

use nix::libc;

/// The program, a static executable for the target.
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sluice-namespace-init"));

/// The sealed memory file, made on first use.
static SEALED: OnceLock<Result<OwnedFd, String>> = OnceLock::new();

/// The sealed memory file holding the init program, made on the first call.
pub(crate) fn sealed() -> Result<BorrowedFd<'static>, String> {
    match SEALED.get_or_init(|| {
        seal(PROGRAM)
            .map_err(|error| format!("cannot prepare the PID namespace's init program: {error}"))
    }) {
        Ok(fd) => Ok(fd.as_fd()),
        Err(reason) => Err(reason.clone()),
    }
}

/// A memory file holding `program`, execute-only and sealed.
fn seal(program: &[u8]) -> io::Result<OwnedFd> {
    let name = c"sluice-namespace-init";
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a NUL-terminated name and flags; the result is checked.
    // MFD_EXEC says the file is meant to be run (kernels with `vm.memfd_noexec`, 6.3 and
    // later); older kernels refuse the flag, and every memory file is executable there.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(program)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o111))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor owned by `file`, with an integer argument.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::F_ADD_SEALS,
            seals,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn the_program_is_sealed_execute_only_and_whole() {
        let fd = sealed().unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o7777, 0o111);
        assert_eq!(metadata.len(), PROGRAM.len() as u64);
        assert!(PROGRAM.starts_with(b"\x7fELF"), "an executable");
        // SAFETY: fcntl on a valid descriptor with no argument.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & all, all);
        // SAFETY: fcntl on a valid descriptor with no argument.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // The same file on every call.
        assert_eq!(sealed().unwrap().as_raw_fd(), fd.as_raw_fd());
    }
}
