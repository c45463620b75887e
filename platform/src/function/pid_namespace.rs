//! A PID namespace per instance: the function sees only its own processes, cannot name
//! (and so cannot signal or trace) the platform or another job's processes, and when the
//! instance ends, every process it left behind ends with it, wherever it moved to
//! (another process group, a new session, a double fork).
//!
//! `unshare(CLONE_NEWPID)` puts the caller's *children* in the new namespace, not the
//! caller, and the first child becomes the namespace's `init`, which the kernel treats
//! specially (it gets no signal it has no handler for, even from itself, and the whole
//! namespace is killed when it ends). So the forked child of the platform makes two
//! children before it becomes the relay:
//!
//! ```text
//! platform ─ fork (std) ─▶ relay (platform's namespace; the instance's leader and group)
//!                            │ unshare(CLONE_NEWPID)
//!                            ├─ posix_spawn ─────▶ init (pid 1 of the new namespace)
//!                            ├─ fork ────────────▶ function (pid 2): the rest of the
//!                            │                     setup, then exec
//!                            └─ exec the relay program
//! ```
//!
//! - init and the relay are the small static program `namespace_init` (its two modes),
//!   run from the platform's sealed memory file ([`super::init_program`]). Neither
//!   keeps a copy of the platform's memory: a relay that stayed a fork of the platform
//!   would own, for the instance's whole life, every page the platform wrote since the
//!   fork (measured: 30 MB per instance started at an idle platform's size, more for one
//!   started under load).
//! - The relay waits for the function, then kills init, which ends the namespace (the
//!   kernel kills whatever the function left in it before init is reaped), and ends as
//!   the function ended (same exit code, or killed by the same signal), so the platform
//!   sees the function's status. Killing the relay (SIGKILL to the instance's process
//!   group) kills init (`PR_SET_PDEATHSIG`), which ends the namespace.
//! - Both ignore every signal that can be ignored, so a SIGTERM to the process group
//!   reaches the function (which handles it as it likes) and not them; both close every
//!   descriptor (the function's pipes and the spawner's error pipe), so the platform sees
//!   end of file when the function closes its end.
//! - Without the memory file (a host that refuses executable memory files), init is a
//!   `clone(CLONE_VM)` of the relay running [`init_main`] on a stack of its own, and the
//!   relay stays a fork of the platform running [`relay`]: the same behaviour, with the
//!   memory cost above. An `exec` of the relay program that fails falls back the same way.
//! - The function joins the instance's cgroup itself (relay and init do not count
//!   against `function.max_processes`), then mounts a `/proc` of the new namespace
//!   ([`super::namespaces`]). Its parent, the relay, is outside its namespace:
//!   `getppid()` answers 0.
//!
//! Invariant: everything here runs between `fork` and `exec` (or `_exit`): plain
//! syscalls on integers and stack buffers, nothing that allocates.

use std::io;
use std::os::fd::RawFd;

use nix::libc;

/// Bytes of init's stack (mapped lazily; it uses a few KiB).
const INIT_STACK: usize = 256 << 10;

/// Enters a new PID namespace. Returns in the function process (pid 2 of the namespace)
/// only; the relay never returns (it `exec`s the relay program, or `_exit`s). `program`
/// is the sealed memory file holding init and the relay, when the host allows one. In
/// the forked child only.
pub(crate) fn enter_in_child(program: Option<RawFd>) -> io::Result<()> {
    // SAFETY: plain syscalls on integers, on stack buffers and on memory mapped here; the
    // spawn, clone and fork happen in an already forked, single-threaded child; a cloned
    // init runs `init_main` on its own stack and touches no other memory.
    unsafe {
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return Err(io::Error::last_os_error());
        }
        let init = match program {
            Some(program) => spawn_init(program)?,
            None => clone_init()?,
        };
        match libc::fork() {
            -1 => {
                let error = io::Error::last_os_error();
                libc::kill(init, libc::SIGKILL);
                while libc::waitpid(init, std::ptr::null_mut(), 0) != init {}
                Err(error)
            }
            0 => Ok(()),
            function => {
                if let Some(program) = program {
                    exec_relay(program, function, init);
                }
                relay(function, init)
            }
        }
    }
}

/// Starts the init program as the namespace's pid 1.
///
/// # Safety
/// In the forked child only.
unsafe fn spawn_init(program: RawFd) -> io::Result<libc::pid_t> {
    let path = ProcFdPath::new(program);
    let argv: [*mut libc::c_char; 2] =
        [c"sluice-ns-init".as_ptr().cast_mut(), std::ptr::null_mut()];
    let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
    let mut init: libc::pid_t = 0;
    // SAFETY: NUL-terminated path and argument arrays on this stack; no file actions or
    // attributes. posix_spawn is a vfork and an exec: nothing of this process is copied.
    let failed = unsafe {
        libc::posix_spawn(
            &mut init,
            path.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if failed != 0 {
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok(init)
}

/// Init as a `clone(CLONE_VM)` of this process, for hosts without the init program.
///
/// # Safety
/// In the forked child only.
unsafe fn clone_init() -> io::Result<libc::pid_t> {
    // SAFETY: a mapping made here is the clone's stack; `init_main` touches nothing else.
    unsafe {
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
        Ok(init)
    }
}

/// Replaces this process (the relay) with the relay program. Returns only if the
/// `exec` failed.
fn exec_relay(program: RawFd, function: libc::pid_t, init: libc::pid_t) {
    let path = ProcFdPath::new(program);
    let function = Decimal::new(function);
    let init = Decimal::new(init);
    let argv: [*const libc::c_char; 4] = [
        c"sluice-relay".as_ptr(),
        function.as_ptr(),
        init.as_ptr(),
        std::ptr::null(),
    ];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated path and argument arrays on this stack.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
}

/// `/proc/self/fd/N`, NUL-terminated, on the stack.
struct ProcFdPath([u8; 32]);

impl ProcFdPath {
    fn new(fd: RawFd) -> Self {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut path = [0; 32];
        path[..PREFIX.len()].copy_from_slice(PREFIX);
        let digits = Decimal::new(fd);
        path[PREFIX.len()..PREFIX.len() + digits.len].copy_from_slice(&digits.text[..digits.len]);
        Self(path)
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.0.as_ptr().cast()
    }
}

/// A non-negative number in decimal, NUL-terminated, on the stack.
struct Decimal {
    text: [u8; 12],
    len: usize,
}

impl Decimal {
    fn new(value: libc::c_int) -> Self {
        let mut digits = [0u8; 12];
        let mut count = 0;
        let mut rest = value.unsigned_abs();
        loop {
            digits[count] = b'0' + (rest % 10) as u8;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut text = [0u8; 12];
        for at in 0..count {
            text[at] = digits[count - 1 - at];
        }
        Self { text, len: count }
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.text.as_ptr().cast()
    }
}

/// Does nothing: its only effect is to wake init's `sigsuspend`.
extern "C" fn wake(_signal: libc::c_int) {}

/// The namespace's pid 1 without the init program: reaps every orphan until it is
/// killed.
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

/// The instance's leader in the platform's namespace without the relay program: waits
/// for `function`, ends the namespace (kills `init` and reaps it), then ends as the
/// function did.
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
