"""The warm interpreter: `python -m ordo warm FILE`, which the worker starts and keeps.

It imports FILE once (and so what FILE imports), then forks a child for each task attempt the
worker asks for, so that an attempt does not pay for a fresh interpreter and its imports. The
worker talks to it over a SEQPACKET socket on fd 3, one JSON object a message:

    <- {"ready": true, "pid": N}                         once FILE is imported
    -> {"argv": ["run", FILE, FUNCTION, ...], "env": {...}, "cwd": DIR}, with the fds [stdout, stderr]
    <- {"pid": N} | {"stale": true} | {"error": "..."}   the answer
    <- {"exit": N, "code": C} | {"exit": N, "signal": S} when a child ended

An import error prints its traceback on stderr and exits 1 before "ready". A request that finds a
module under FILE's directory changed since the import is answered "stale", as is every request
after it, and the interpreter exits once its running children ended (so an edit does not cost
them): the worker starts a fresh one. The interpreter has no threads (fork is unsafe with them):
children are reaped when a SIGCHLD wakes the poll through a wake-up fd.
"""

import gc
import json
import os
import select
import signal
import socket
import sys
import traceback

from ordo import _runner

_SOCKET_FD = 3
# the largest request taken; a larger one is answered with an error and runs cold
_MAX_REQUEST = 8 << 20
_FDS = 2  # stdout, stderr


def main(argv):
    if len(argv) != 1:
        print("usage: python -m ordo warm FILE (started by the ordo worker)", file=sys.stderr)
        return 2
    path = argv[0]
    try:
        sock = socket.socket(fileno=_SOCKET_FD)
    except OSError as e:
        print("python -m ordo warm: no socket on fd %d: %s" % (_SOCKET_FD, e), file=sys.stderr)
        return 2
    sock.set_inheritable(False)
    directory = os.path.dirname(os.path.abspath(path))
    before = _stat(os.path.abspath(path))
    # A cached .pyc is trusted when its source's size and mtime in whole seconds match: an edit
    # within the second would bring back the old code in the next interpreter.
    write_bytecode = not sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        _runner.load_flow_module(path)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    # What the import made stays shared with the children: the collector leaves it alone, so
    # that a child's collections do not copy the pages it lies in.
    gc.freeze()
    watched = _modules_under(directory)
    watched[os.path.abspath(path)] = before  # an edit during the import is an edit after it
    die_with_parent = _death_signal()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    _send(sock, {"ready": True, "pid": os.getpid()})

    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    poll.register(wake_r, select.POLLIN)
    children = set()
    stale = False
    while True:
        for fd, _ in poll.poll():
            if fd == wake_r:
                _drain(wake_r)
                _reap(sock, children)
                if stale and not children:
                    return 0
                continue
            msg, ancdata, flags, _ = sock.recvmsg(_MAX_REQUEST, socket.CMSG_SPACE(_FDS * 4))
            fds = _received_fds(ancdata)
            if not msg and not fds:
                return 0  # the worker closed its end
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != _FDS:
                    _send(sock, {"error": "a request of %d bytes with %d fds: too large or malformed" % (len(msg), len(fds))})
                    continue
                stale = stale or _changed(watched)
                if stale:
                    _send(sock, {"stale": True})
                    if not children:
                        return 0
                    continue
                req = json.loads(msg.decode("utf-8"))
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    sys.dont_write_bytecode = not write_bytecode
                    _child(req, fds, (sock.fileno(), wake_r, wake_w), die_with_parent)
                try:
                    os.setpgid(pid, pid)  # also done by the child: whichever runs first
                except OSError:
                    pass
                children.add(pid)
                _send(sock, {"pid": pid})
            except Exception as e:  # a bad request or a failed fork: that attempt runs cold
                _send(sock, {"error": "%s: %s" % (type(e).__name__, e)})
            finally:
                for fd in fds:
                    os.close(fd)


def _child(req, fds, close, die_with_parent):
    """Run one attempt in the forked child; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        die_with_parent()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null,) + tuple(fds):
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        sys.argv[1:] = req["argv"]
        _reseed()
        code = _runner.main(req["argv"][1:])
    except SystemExit as e:
        code = _exit_status(e.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) and 0 <= code <= 255 else 1)


def _exit_status(code):
    """The exit status a process ending with SystemExit(code) has."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _reseed():
    """Give the child's random generators their own seed, as a fresh interpreter would have."""
    # the random module reseeds itself after a fork; numpy's global generator does not
    nprandom = sys.modules.get("numpy.random")
    if nprandom is not None:
        try:
            nprandom.seed()
        except Exception:
            pass


def _death_signal():
    """A function that makes the calling child die with its parent (Linux), as a task the worker
    starts itself dies with the worker."""
    parent = os.getpid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (ImportError, OSError, AttributeError):
        return lambda: None

    def die_with_parent():
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return die_with_parent


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _modules_under(directory):
    """The files of the imported modules under directory, with their stat."""
    prefix = os.path.join(directory, "")
    out = {}
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str):
            continue
        f = os.path.abspath(f)
        if f.startswith(prefix) and "site-packages" not in f:
            out[f] = _stat(f)
    return out


def _changed(watched):
    for f, st in watched.items():
        if _stat(f) != st:
            return True
    return False


def _send(sock, obj):
    sock.send(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def _drain(fd):
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(sock, children):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        if os.WIFSIGNALED(status):
            _send(sock, {"exit": pid, "signal": os.WTERMSIG(status)})
        elif os.WIFEXITED(status):
            _send(sock, {"exit": pid, "code": os.WEXITSTATUS(status)})


def _received_fds(ancdata):
    fds = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(int.from_bytes(data[i * 4 : i * 4 + 4], sys.byteorder) for i in range(n))
    return fds
