# Sluice preload parent ("zygote") for Python functions with function.preload.
#
# Started by the platform as `python3 -c <this file> <config>` through the same sandbox as
# any instance (cleared environment, rlimits, cgroup, network namespace, no capabilities).
# It imports the preload modules once, then forks instances on request. Protocol on fd 0,
# a SOCK_SEQPACKET socket, one JSON object per packet:
#
#   platform -> zygote  {"op": "fork", "id": N, "env": {...}} with fds [stdin, stdout,
#                       stderr, go], and with "namespaces" in the config a fifth, init (a
#                       sealed, execute-only memory file holding the init program of the
#                       instance's PID namespace): fork an instance wired to those pipes
#                       {"op": "release", "pid": P}: reap P now, or as soon as it exits
#   zygote -> platform  {"ready": true} once the modules are imported
#                       {"id": N, "pid": P} or {"id": N, "error": "..."}
#                       {"exited": P, "status": S}, S a raw wait status; P stays a zombie
#                       (its pid and process group id reserved) until released
#
# A forked child puts itself in its own process group, dies with the zygote, waits for
# one byte on `go` (the platform moves it into its own cgroup first), takes the pipes as
# fds 0-2, closes every other fd, replaces the environment with the instance's and runs
# the script as __main__ with runpy, then exits like an interpreter would.
#
# With "namespaces" in the config (the zygote then holds CAP_SYS_ADMIN in a user namespace
# of its own, and a system call filter that allows mount and unshare of mount and PID
# namespaces), the forked child, after `go`, becomes the instance's relay, like a spawned
# instance's (pid_namespace.rs): it makes a mount and a PID namespace, mounts a private
# /tmp (also /var/tmp) and /dev/shm, starts the namespace's init (pid 1: the native
# program passed as fd 3, started with posix_spawn, a vfork and an exec, so no copy of
# the interpreter; it reaps orphans, dies with the relay, and is not dumpable) and forks
# the function (pid 2: mounts the namespace's /proc, drops every capability, puts itself
# under the full system call filter by adding to the zygote's, which it inherits, the
# part the zygote lacks, then runs the script), waits for the function, kills init
# (which ends every process left in the namespace) and ends as the function ended. Relay
# and init ignore every signal they can and hold no descriptor. What the relay and the
# function call per instance is looked up and prepared here once, before any fork.
import ctypes
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 0x1000, 0x4000, 1 << 18
MAX_MESSAGE = 1 << 20
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3
# Where a relay keeps the init program until it starts it.
INIT_FD = 3
INIT_PATH = f"/proc/self/fd/{INIT_FD}"

if not (hasattr(os, "pidfd_open") and hasattr(socket, "recv_fds")):
    sys.exit(f"function.preload needs Python 3.9 or later on Linux 5.3 or later; this is Python {sys.version.split()[0]}")
config = json.loads(sys.argv[1])
script = os.path.abspath(config["script"])
script_args = config["args"]
namespaces = config.get("namespaces")
libc = ctypes.CDLL(None, use_errno=True)

# fd 0 is the control socket; stdout goes to stderr (the platform logs it).
control = socket.socket(fileno=os.dup(0))
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
os.dup2(2, 1)
# Instances (same user) must not read or trace the zygote.
libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
# Imports resolve as they would for `python3 script.py`.
sys.path[0] = os.path.dirname(script)
for module in config["preload"]:
    importlib.import_module(module)
sys.stdout.flush()
sys.stderr.flush()
zygote_pid = os.getpid()


def send(message):
    control.send(json.dumps(message).encode())


def exit_code(code):
    """What an interpreter exits with for `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot {what}: {os.strerror(errno)}")


def prctl(option, *args):
    args = [ctypes.c_ulong(arg) if isinstance(arg, int) else arg for arg in args]
    args += [ctypes.c_ulong(0)] * (4 - len(args))
    return libc.prctl(ctypes.c_int(option), *args)


def mount(source, target, fstype, flags, data):
    return libc.mount(source, target, fstype, ctypes.c_ulong(flags), data)


def real_dir(path):
    return os.path.isdir(path) and not os.path.islink(path)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def ignore_signals():
    for number in range(1, signal.NSIG):
        if number in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(number, signal.SIG_IGN)
        except (OSError, ValueError):
            pass  # reserved by the C library


def relay(function, init):
    """Waits for the function, ends the namespace, ends as the function did."""
    try:
        ignore_signals()
        os.closerange(0, os.sysconf("SC_OPEN_MAX"))
        _, status = os.waitpid(function, 0)
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
            os.kill(os.getpid(), number)
            os._exit(128 + number)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
    finally:
        os._exit(1)


def prepare_namespaces():
    """What every instance's relay and function need, made once in the zygote: the C
    library functions looked up, the mount options, the capability sets and the system
    call filter programs."""
    for name in ("unshare", "mount", "capset", "prctl"):
        getattr(libc, name)
    ids = f"uid={namespaces['uid']},gid={namespaces['gid']}"
    programs = []
    for program in namespaces["seccomp"] or []:
        code = bytes.fromhex(program)
        buffer = ctypes.create_string_buffer(code, len(code))
        programs.append((buffer, SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))))
    return {
        "scratch": f"size={namespaces['scratch_size']},mode=0700,{ids}".encode(),
        "shm": f"size={namespaces['shm_size']},mode=0700,{ids}".encode(),
        "var_tmp": real_dir("/var/tmp"),
        "dev_shm": real_dir("/dev/shm"),
        "cap_header": CapHeader(CAPABILITY_VERSION_3, 0),
        "cap_data": (CapData * 2)(),
        "programs": programs,
    }


def enter_namespaces():
    """Makes the instance's namespaces; returns in the function process (pid 2) only,
    without capabilities and under the full system call filter."""
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "make the instance's mount and PID namespaces")
    check(mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make its mounts private")
    check(mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, prepared["scratch"]), "mount its /tmp")
    if prepared["var_tmp"]:
        check(mount(b"/tmp", b"/var/tmp", None, MS_BIND | MS_REC, None), "mount its /var/tmp")
    if prepared["dev_shm"]:
        check(mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, prepared["shm"]), "mount its /dev/shm")
    # The first process of the namespace is its init (pid 1).
    init = os.posix_spawn(INIT_PATH, ["sluice-namespace-init"], {})
    try:
        function = os.fork()
    except BaseException:
        os.kill(init, signal.SIGKILL)
        raise
    if function != 0:
        relay(function, init)
    os.close(INIT_FD)
    check(mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=invisible"), "mount its /proc")
    check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL), "clear its ambient capabilities")
    check(libc.capset(ctypes.byref(prepared["cap_header"]), prepared["cap_data"]), "drop its capabilities")
    for _buffer, fprog in prepared["programs"]:
        check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog)), "install the system call filter")


def run_instance(request, stdin, stdout, stderr, go, init=None):
    """The forked child: never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            os._exit(126)
        if os.getppid() != zygote_pid:
            os._exit(126)
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        if os.read(go, 1) != b"g":
            os._exit(126)
        os.dup2(stdin, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        control.detach()
        if init is not None:
            os.dup2(init, INIT_FD)
        os.closerange(INIT_FD if init is None else INIT_FD + 1, os.sysconf("SC_OPEN_MAX"))
        if namespaces is not None:
            enter_namespaces()
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [script, *script_args]
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit_code(exit.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        # Interpreter shutdown: wait for threads, run atexit handlers, flush.
        threading = sys.modules.get("threading")
        if threading is not None and hasattr(threading, "_shutdown"):
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                code = code or 120
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def wait_status(info):
    if info.si_code == CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    if info.si_code == CLD_DUMPED:
        return info.si_status | 0x80
    return info.si_status


def main():
    poller = select.poll()
    poller.register(control, select.POLLIN)
    children = {}  # pidfd -> pid, for instances still running
    exited = set()  # pids that ended and wait to be released
    release_on_exit = set()  # pids released before they ended
    while True:
        for fd, _events in poller.poll():
            if fd == control.fileno():
                message, fds, _flags, _address = socket.recv_fds(control, MAX_MESSAGE, 8)
                if not message:
                    os._exit(0)  # the platform is gone; instances die with us
                request = json.loads(message)
                if request["op"] == "release":
                    pid = request["pid"]
                    if pid in exited:
                        exited.discard(pid)
                        os.waitpid(pid, 0)
                    else:
                        release_on_exit.add(pid)
                    continue
                try:
                    if len(fds) != expected_fds:
                        raise ValueError(f"expected {expected_fds} file descriptors, got {len(fds)}")
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        run_instance(request, *fds)
                    try:
                        os.setpgid(pid, pid)
                    except OSError:
                        pass  # the child did it first
                    pidfd = os.pidfd_open(pid)
                    children[pidfd] = pid
                    poller.register(pidfd, select.POLLIN)
                    reply = {"id": request["id"], "pid": pid}
                except Exception as error:
                    reply = {"id": request["id"], "error": f"{type(error).__name__}: {error}"}
                finally:
                    for passed in fds:
                        os.close(passed)
                send(reply)
            else:
                pid = children.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                status = wait_status(info)
                if pid in release_on_exit:
                    release_on_exit.discard(pid)
                    os.waitpid(pid, 0)
                else:
                    exited.add(pid)
                send({"exited": pid, "status": status})


prepared = prepare_namespaces() if namespaces is not None else None
expected_fds = 4 if namespaces is None else 5
send({"ready": True})
main()
