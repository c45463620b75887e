//! The init of a preloaded instance's PID namespace (pid 1): a program of its own, built
//! by `platform/build.rs` as a static executable and embedded in the platform
//! ([`super::super::init_program`]), which hands it to the preload process as a sealed
//! memory file. The instance's relay starts it with `posix_spawn` (a `vfork` and an
//! `exec`: none of the interpreter's memory is copied) right after making the namespace,
//! so it is the namespace's first process.
//!
//! It only reaps the namespace's orphans until it is killed: the relay kills it when the
//! function ends, and it dies with the relay (`PR_SET_PDEATHSIG`); the kernel then ends
//! every process left in the namespace. It ignores every signal it can (as pid 1 it gets
//! none it has no handler for from inside the namespace anyway), holds no descriptor,
//! and is not dumpable (the platform makes the program executable but not readable, so
//! it is not dumpable from the `exec` on): a function of the same user can neither see
//! it under `/proc` (`hidepid`) nor read or write its memory.
//!
//! Built with `panic = "abort"` and no Rust runtime start-up (`#![no_main]`): `main` is
//! the C library's entry point, and everything here is a plain C library call on
//! integers and stack memory. Linux on `x86_64` and `aarch64` (the constants below are the
//! same on both).
#![no_main]

use std::ffi::{c_char, c_int, c_long, c_ulong, c_void};

const PR_SET_PDEATHSIG: c_int = 1;
const PR_SET_DUMPABLE: c_int = 4;
const PR_SET_NAME: c_int = 15;
const SIGKILL: c_int = 9;
const SIGCHLD: c_int = 17;
const SIGSTOP: c_int = 19;
/// The last signal number (`SIGRTMAX`).
const LAST_SIGNAL: c_int = 64;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;
const SIG_BLOCK: c_int = 0;
const WNOHANG: c_int = 1;
const SYS_CLOSE_RANGE: c_long = 436;
const RLIMIT_NOFILE: c_int = 7;
/// A zero argument of a variadic call (passed as a full register).
const NONE: c_ulong = 0;

/// The C library's `sigset_t` (1024 bits).
#[repr(C)]
struct SigSet([c_ulong; 1024 / c_ulong::BITS as usize]);

unsafe extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn signal(signum: c_int, handler: usize) -> usize;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut c_void) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn getrlimit(resource: c_int, limit: *mut [c_ulong; 2]) -> c_int;
    fn close(fd: c_int) -> c_int;
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // SAFETY: C library calls on integers and on memory of this stack frame.
    unsafe {
        prctl(PR_SET_PDEATHSIG, SIGKILL as c_ulong, NONE, NONE, NONE);
        prctl(PR_SET_DUMPABLE, NONE, NONE, NONE, NONE);
        // Its name in `ps` on the host (it would be "3", from `/proc/self/fd/3`).
        prctl(PR_SET_NAME, c"sluice-ns-init".as_ptr(), NONE, NONE, NONE);
        // SIGCHLD blocked and taken with sigwaitinfo: none is lost between the reaping
        // loop and the wait.
        let mut chld = SigSet([0; 1024 / c_ulong::BITS as usize]);
        sigemptyset(&raw mut chld);
        sigaddset(&raw mut chld, SIGCHLD);
        sigprocmask(SIG_BLOCK, &raw const chld, std::ptr::null_mut());
        for number in 1..=LAST_SIGNAL {
            let handler = if number == SIGCHLD { SIG_DFL } else { SIG_IGN };
            if number != SIGKILL && number != SIGSTOP {
                // Fails for the numbers the C library keeps for itself: nothing to do.
                signal(number, handler);
            }
        }
        close_all();
        loop {
            while waitpid(-1, std::ptr::null_mut(), WNOHANG) > 0 {}
            sigwaitinfo(&raw const chld, std::ptr::null_mut());
        }
    }
}

/// Closes every descriptor (the relay's, inherited through `exec`).
unsafe fn close_all() {
    // SAFETY: plain system calls on integers and a local struct.
    unsafe {
        if syscall(SYS_CLOSE_RANGE, NONE, c_int::MAX as c_ulong, NONE) == 0 {
            return;
        }
        // Kernels before 5.9 have no close_range.
        let mut limit = [0 as c_ulong; 2];
        let last = if getrlimit(RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit[0].min(1 << 20) as c_int
        } else {
            1 << 16
        };
        for fd in 0..last {
            close(fd);
        }
    }
}
