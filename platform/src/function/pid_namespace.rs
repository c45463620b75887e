//! A PID namespace per instance: the function sees only its own processes, cannot name
//! (and so cannot signal or trace) the platform or another job's processes, and when the
//! instance ends, every process it left behind ends with it, wherever it moved to
//! (another process group, a new session, a double fork).
//!
//! `unshare(CLONE_NEWPID)` puts the caller's *children* in the new namespace, not the
//! caller, and the first child becomes the namespace's `init`, which the kernel treats
//! specially (it gets no signal it has no handler for, even from itself, and the whole
//! namespace is killed when it ends). So the forked child of the platform becomes three
//! processes, none of which `exec`s but the last:
//!
//! ```text
//! platform ─ fork (std) ─▶ relay (platform's namespace; the instance's leader and group)
//!                            │ unshare(CLONE_NEWPID), fork
//!                            ▼
//!                          init (pid 1 of the new namespace, root, reaps orphans)
//!                            │ fork
//!                            ▼
//!                          function (pid 2): the rest of the setup, then exec
//! ```
//!
//! - The relay waits for init and ends as the function ended (same exit code, or killed
//!   by the same signal), so the platform sees the function's status. Killing the relay
//!   (SIGKILL to the instance's process group) kills init (`PR_SET_PDEATHSIG`), which
//!   kills the namespace.
//! - init reaps every orphan; when the function ends it reports the function's wait
//!   status to the relay through a pipe and exits, and the kernel kills whatever is left
//!   in the namespace before init is gone.
//! - Both ignore every signal that can be ignored, so a SIGTERM to the process group
//!   reaches the function (which handles it as it likes) and not them; both close every
//!   descriptor they do not need (the function's pipes and the spawner's error pipe), so
//!   the platform sees end of file when the function closes its end.
//! - The function joins the instance's cgroup itself (relay and init do not count
//!   against `function.max_processes`), then mounts a `/proc` of the new namespace
//!   ([`super::namespaces`]).
//!
//! Invariant: everything here runs between `fork` and `exec` (or `_exit`): plain
//! syscalls on integers, nothing that allocates.

use std::io;

use nix::libc;

/// Enters a new PID namespace. Returns in the function process (pid 2 of the namespace)
/// only; the relay and init processes it makes never return (they `_exit`). In the forked
/// child only.
pub(crate) fn enter_in_child() -> io::Result<()> {
    // SAFETY: plain syscalls on integers and on a two-element array owned by this frame;
    // the forks happen in an already forked, single-threaded child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut status_pipe = [-1; 2];
        if libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        let [status_read, status_write] = status_pipe;
        match libc::fork() {
            -1 => return Err(io::Error::last_os_error()),
            0 => {}
            init => {
                libc::close(status_write);
                relay(init, status_read)
            }
        }
        libc::close(status_read);
        // The relay may die before this; then the cgroup kill or the kernel's reaping of
        // the relay's group still reaches the namespace through the function.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                libc::close(status_write);
                Ok(())
            }
            function => init(function, status_write),
        }
    }
}

/// The namespace's pid 1: reaps every process that ends in it; when `function` ends,
/// writes its raw wait status to `status_write` and exits, which ends the namespace.
fn init(function: libc::pid_t, status_write: libc::c_int) -> ! {
    ignore_signals();
    close_all_but(status_write);
    // SAFETY: plain syscalls on integers and a local status word.
    unsafe {
        loop {
            let mut status: libc::c_int = 0;
            let reaped = libc::waitpid(-1, &mut status, 0);
            if reaped == function {
                let bytes = status.to_ne_bytes();
                libc::write(status_write, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
            if reaped == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                libc::_exit(1);
            }
        }
    }
}

/// The instance's leader in the platform's namespace: waits for `init`, then ends as the
/// function did (its status read from `status_read`), or as init did when it reported
/// nothing (it was killed).
fn relay(init: libc::pid_t, status_read: libc::c_int) -> ! {
    ignore_signals();
    close_all_but(status_read);
    // SAFETY: plain syscalls on integers and local buffers.
    unsafe {
        let mut status: libc::c_int = 0;
        while libc::waitpid(init, &mut status, 0) == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
        let mut reported = [0u8; 4];
        if libc::read(status_read, reported.as_mut_ptr().cast(), reported.len()) == 4 {
            status = libc::c_int::from_ne_bytes(reported);
        }
        end_as(status)
    }
}

/// Exits with `status`'s code, or dies of its signal (without a core dump).
fn end_as(status: libc::c_int) -> ! {
    // SAFETY: plain syscalls on integers.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut unblock: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblock);
            libc::sigaddset(&mut unblock, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            1
        })
    }
}

/// Every signal that can be ignored, but SIGCHLD (whose default keeps children waitable).
fn ignore_signals() {
    // SAFETY: `signal` with SIG_IGN on signal numbers; no handler runs.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP && signal != libc::SIGCHLD {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
    }
}

/// Closes every descriptor but `keep` (stdin, stdout and stderr included).
fn close_all_but(keep: libc::c_int) {
    // SAFETY: plain syscalls on integers.
    unsafe {
        let below = if keep > 0 {
            libc::syscall(
                libc::SYS_close_range,
                0 as libc::c_uint,
                (keep - 1) as libc::c_uint,
                0 as libc::c_uint,
            )
        } else {
            0
        };
        let above = libc::syscall(
            libc::SYS_close_range,
            (keep + 1) as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        if below == 0 && above == 0 {
            return;
        }
        // Kernels before 5.9 have no close_range: close each possible descriptor.
        let mut limit: libc::rlimit = std::mem::zeroed();
        let last = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            libc::c_int::try_from(limit.rlim_cur.min(1 << 20)).unwrap_or(1 << 20)
        } else {
            1 << 16
        };
        for fd in (0..last).filter(|&fd| fd != keep) {
            libc::close(fd);
        }
    }
}

/// Whether a child can get a PID namespace of its own (needs `CAP_SYS_ADMIN`). Runs in
/// a probe child.
pub(crate) fn pid_namespace_works() -> bool {
    // SAFETY: a plain syscall in a forked probe child.
    unsafe { libc::unshare(libc::CLONE_NEWPID) == 0 }
}
