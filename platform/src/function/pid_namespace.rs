//! A PID namespace per instance: the function sees only its own processes, cannot name
//! (and so cannot signal or trace) the platform or another job's processes, and when the
//! instance ends, every process it left behind ends with it, wherever it moved to
//! (another process group, a new session, a double fork).
//!
//! `unshare(CLONE_NEWPID)` puts the caller's *children* in the new namespace, not the
//! caller, and the first child becomes the namespace's `init`, which the kernel treats
//! specially (it gets no signal it has no handler for, even from itself, and the whole
//! namespace is killed when it ends). So the forked child of the platform makes two
//! children and does not `exec` itself:
//!
//! ```text
//! platform ─ fork (std) ─▶ relay (platform's namespace; the instance's leader and group)
//!                            │ unshare(CLONE_NEWPID)
//!                            ├─ clone(CLONE_VM) ─▶ init (pid 1 of the new namespace)
//!                            └─ fork ────────────▶ function (pid 2): the rest of the
//!                                                  setup, then exec
//! ```
//!
//! - The relay waits for the function, then kills init, which ends the namespace (the
//!   kernel kills whatever the function left in it before init is reaped), and ends as
//!   the function ended (same exit code, or killed by the same signal), so the platform
//!   sees the function's status. Killing the relay (SIGKILL to the instance's process
//!   group) kills init (`PR_SET_PDEATHSIG`), which ends the namespace.
//! - init only reaps the orphans of the namespace. It shares the relay's memory (no copy
//!   of the platform's page tables, the cost of a `fork`) and runs on a stack of its own;
//!   it touches nothing but that stack, and has its own descriptors and signal handlers.
//! - Both ignore every signal that can be ignored, so a SIGTERM to the process group
//!   reaches the function (which handles it as it likes) and not them; both close every
//!   descriptor (the function's pipes and the spawner's error pipe), so the platform sees
//!   end of file when the function closes its end.
//! - The function joins the instance's cgroup itself (relay and init do not count
//!   against `function.max_processes`), then mounts a `/proc` of the new namespace
//!   ([`super::namespaces`]). Its parent, the relay, is outside its namespace:
//!   `getppid()` answers 0.
//!
//! Invariant: everything here runs between `fork` and `exec` (or `_exit`): plain
//! syscalls on integers, nothing that allocates.

use std::io;

use nix::libc;

/// Bytes of init's stack (mapped lazily; it uses a few KiB).
const INIT_STACK: usize = 256 << 10;

/// Enters a new PID namespace. Returns in the function process (pid 2 of the namespace)
/// only; the relay never returns (it `_exit`s). In the forked child only.
pub(crate) fn enter_in_child() -> io::Result<()> {
    // SAFETY: plain syscalls on integers and on memory mapped here; the clone and fork
    // happen in an already forked, single-threaded child; init runs `init_main` on its
    // own stack and touches no other memory.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return Err(io::Error::last_os_error());
        }
        let stack = libc::mmap(
            std::ptr::null_mut(),
            INIT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let top = stack.cast::<u8>().add(INIT_STACK).cast::<libc::c_void>();
        let init = libc::clone(
            init_main,
            top,
            libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        );
        if init == -1 {
            return Err(io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => {
                let error = io::Error::last_os_error();
                libc::kill(init, libc::SIGKILL);
                while libc::waitpid(init, std::ptr::null_mut(), 0) != init {}
                Err(error)
            }
            0 => Ok(()),
            function => relay(function, init),
        }
    }
}

/// Does nothing: its only effect is to wake init's `sigsuspend`.
extern "C" fn wake(_signal: libc::c_int) {}

/// The namespace's pid 1: reaps every orphan until it is killed.
extern "C" fn init_main(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: plain syscalls on integers and structs on this stack.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        ignore_signals();
        close_all();
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigsuspend(&none);
        }
    }
}

/// The instance's leader in the platform's namespace: waits for `function`, ends the
/// namespace (kills `init` and reaps it), then ends as the function did.
fn relay(function: libc::pid_t, init: libc::pid_t) -> ! {
    ignore_signals();
    close_all();
    // SAFETY: plain syscalls on integers and a local status word. init shares this
    // process's memory and may change errno, so no decision here reads errno.
    unsafe {
        let mut status: libc::c_int = 0;
        while libc::waitpid(function, &mut status, 0) != function {}
        libc::kill(init, libc::SIGKILL);
        while libc::waitpid(init, std::ptr::null_mut(), 0) != init {}
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

/// Closes every descriptor (stdin, stdout and stderr included).
fn close_all() {
    // SAFETY: plain syscalls on integers.
    unsafe {
        let closed = libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        if closed == 0 {
            return;
        }
        // Kernels before 5.9 have no close_range: close each possible descriptor.
        let mut limit: libc::rlimit = std::mem::zeroed();
        let last = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            libc::c_int::try_from(limit.rlim_cur.min(1 << 20)).unwrap_or(1 << 20)
        } else {
            1 << 16
        };
        for fd in 0..last {
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
