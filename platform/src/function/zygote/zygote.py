# Sluice preload parent ("zygote") for Python functions with function.preload.
#
# Started by the platform as `python3 -c <this file> <config>` through the same sandbox as
# any instance (cleared environment, rlimits, cgroup, network namespace, no capabilities).
# It imports the preload modules once, then forks instances on request. Protocol on fd 0,
# a SOCK_SEQPACKET socket, one JSON object per packet:
#
#   platform -> zygote  {"op": "fork", "id": N, "env": {...}} with fds [stdin, stdout,
#                       stderr, go]: fork an instance wired to those pipes
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
import ctypes
import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
MAX_MESSAGE = 1 << 20
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3

if not (hasattr(os, "pidfd_open") and hasattr(socket, "recv_fds")):
    sys.exit(f"function.preload needs Python 3.9 or later on Linux 5.3 or later; this is Python {sys.version.split()[0]}")
config = json.loads(sys.argv[1])
script = os.path.abspath(config["script"])
script_args = config["args"]
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


def run_instance(request, stdin, stdout, stderr, go):
    """The forked child: never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
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
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [script, *script_args]
        import runpy

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
                    if len(fds) != 4:
                        raise ValueError(f"expected 4 file descriptors, got {len(fds)}")
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


send({"ready": True})
main()
