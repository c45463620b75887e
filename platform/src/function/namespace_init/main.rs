//! The init of an instance's PID namespace (pid 1), and the instance's relay: a program of
//! its own, built by `platform/build.rs` as a static executable and embedded in the
//! platform (`function/init_program.rs`) as a sealed memory file.
//!
//! - **init** (no arguments): the instance's relay starts it with `posix_spawn` (a `vfork`
//!   and an `exec`: none of the platform's or the interpreter's memory is copied) right
//!   after making the namespace, so it is the namespace's first process. It only reaps the
//!   namespace's orphans until it is killed: the relay kills it when the function ends,
//!   and it dies with the relay (`PR_SET_PDEATHSIG`); the kernel then ends every process
//!   left in the namespace.
//! - **relay** (`FUNCTION_PID INIT_PID`): a spawned instance's relay, a fork of the
//!   platform, `exec`s this program once it has forked the function, so it does not keep
//!   a copy of the platform's memory for the instance's whole life (every page the
//!   platform wrote since the fork would be the relay's own). It waits for the function,
//!   kills init and reaps it (which ends the namespace), then ends as the function ended
//!   (same exit code, or killed by the same signal), so the platform sees the function's
//!   status.
//!
//! Both ignore every signal they can (SIGCHLD keeps its default), hold no descriptor,
//! and are not dumpable (the platform makes the program executable but not readable, so
//! it is not dumpable from the `exec` on): a function of the same user can neither see
//! them under `/proc` (`hidepid`) nor read or write their memory.
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
const RLIMIT_CORE: c_int = 4;
const RLIMIT_NOFILE: c_int = 7;
const SIG_UNBLOCK: c_int = 1;
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
    fn setrlimit(resource: c_int, limit: *const [c_ulong; 2]) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn kill(pid: c_int, signal: c_int) -> c_int;
    fn getpid() -> c_int;
    fn _exit(status: c_int) -> !;
}

#[unsafe(no_mangle)]
pub extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: `argv` holds `argc` NUL-terminated strings, as the C library passes them.
    let pids = unsafe {
        (argc == 3).then(|| (pid_argument(*argv.add(1)), pid_argument(*argv.add(2))))
    };
    match pids {
        Some((Some(function), Some(init))) => relay(function, init),
        Some(_) => 2,
        None => init(),
    }
}

fn init() -> c_int {
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
        ignore_signals();
        close_all();
        loop {
            while waitpid(-1, std::ptr::null_mut(), WNOHANG) > 0 {}
            sigwaitinfo(&raw const chld, std::ptr::null_mut());
        }
    }
}

/// Waits for `function`, ends the namespace (kills `init` and reaps it), then ends as
/// the function did.
fn relay(function: c_int, init: c_int) -> c_int {
    // SAFETY: C library calls on integers and on memory of this stack frame.
    unsafe {
        prctl(PR_SET_DUMPABLE, NONE, NONE, NONE, NONE);
        prctl(PR_SET_NAME, c"sluice-relay".as_ptr(), NONE, NONE, NONE);
        ignore_signals();
        close_all();
        let mut status: c_int = 0;
        while waitpid(function, &raw mut status, 0) != function {}
        kill(init, SIGKILL);
        while waitpid(init, std::ptr::null_mut(), 0) != init {}
        end_as(status)
    }
}

/// Exits with `status`'s code, or dies of its signal (without a core dump).
fn end_as(status: c_int) -> ! {
    let signal = status & 0x7f;
    // SAFETY: C library calls on integers and on memory of this stack frame.
    unsafe {
        if signal != 0 && signal != 0x7f {
            let no_core: [c_ulong; 2] = [0, 0];
            setrlimit(RLIMIT_CORE, &raw const no_core);
            signal_default(signal);
            let mut unblock = SigSet([0; 1024 / c_ulong::BITS as usize]);
            sigemptyset(&raw mut unblock);
            sigaddset(&raw mut unblock, signal);
            sigprocmask(SIG_UNBLOCK, &raw const unblock, std::ptr::null_mut());
            kill(getpid(), signal);
            _exit(128 + signal);
        }
        _exit(if signal == 0 { (status >> 8) & 0xff } else { 1 })
    }
}

/// Every signal that can be ignored, but SIGCHLD (whose default keeps children
/// waitable).
fn ignore_signals() {
    for number in 1..=LAST_SIGNAL {
        let handler = if number == SIGCHLD { SIG_DFL } else { SIG_IGN };
        if number != SIGKILL && number != SIGSTOP {
            // SAFETY: `signal` with SIG_IGN or SIG_DFL; no handler runs. Fails for the
            // numbers the C library keeps for itself: nothing to do.
            unsafe { signal(number, handler) };
        }
    }
}

fn signal_default(number: c_int) {
    // SAFETY: as in `ignore_signals`.
    unsafe { signal(number, SIG_DFL) };
}

/// A positive decimal pid, or `None`.
///
/// # Safety
/// `text` is a NUL-terminated string.
unsafe fn pid_argument(text: *const c_char) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut at = text;
    // SAFETY: reads up to the terminating NUL.
    unsafe {
        if *at == 0 {
            return None;
        }
        while *at != 0 {
            let digit = (*at as u8).wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value.checked_mul(10)?.checked_add(c_int::from(digit))?;
            at = at.add(1);
        }
    }
    (value > 0).then_some(value)
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
