"""The warm interpreter: `python -m ordo warm FILE`, which the worker starts and keeps.

It imports FILE once (and so what FILE imports), then forks a child for each task attempt the
worker asks for, so that an attempt does not pay for a fresh interpreter and its imports. The
worker talks to it over a SEQPACKET socket on fd 3, one JSON object a message:

    <- {"ready": true, "pid": N}                         once FILE is imported
    -> {"argv": ["run", FILE, FUNCTION, ...], "env": {...}, "cwd": DIR}, with the fds [stdout, stderr]
    <- {"pid": N} | {"stale": true} | {"error": "..."}   the answer
    <- {"exit": N, "code": C} | {"exit": N, "signal": S} when a child ended

An import error prints its traceback on stderr and exits 1 before "ready". A request that finds a
module under FILE's directory changed since the import is answered "stale", and the interpreter
exits once its running children ended (so an edit does not cost them): the worker starts a fresh
one.

The child of the next request is forked ahead of it (a spare; two wait) and reads the request
from the socket itself, answers it and runs it; it tells the interpreter through a pipe that it
took one.
The interpreter only forks, reaps (a SIGCHLD wakes its poll through a wake-up fd) and sends the
exits. So it writes little memory while a child shares its pages: a page written by either side
is copied, and here that is what a request would wait for. It has no threads (fork is unsafe
with them).
"""

import gc
import inspect
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

from ordo import _runner

_SOCKET_FD = 3
# the largest request taken; a larger one is answered with an error and runs cold
_MAX_REQUEST = 8 << 20
_FDS = 2  # stdout, stderr
# how many children wait for requests: two, so that while one runs an attempt the next attempt
# finds the other ready
_SPARES = 2
# how long after a spare took a request its replacement is forked, unless a child ends before:
# a fork holds the interpreter for a while, and a quick task's exit would wait for it
_SPARE_DELAY = 0.05


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
    sys.dont_write_bytecode = not write_bytecode
    watched = _modules_under(directory)
    watched[os.path.abspath(path)] = before  # an edit during the import is an edit after it

    wake_r, wake_w = os.pipe()
    taken_r, taken_w = os.pipe()
    for fd in (wake_r, wake_w, taken_r):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    _send(sock, {"ready": True, "pid": os.getpid()})
    # What the import made stays shared with the children: the collector leaves it alone, so
    # that a child's collections do not copy the pages it lies in.
    gc.freeze()
    spares = _Spares(sock, watched, (wake_r, wake_w, taken_r), taken_w)
    spares.fork()

    poll = select.poll()
    poll.register(sock.fileno(), 0)
    poll.register(wake_r, select.POLLIN)
    poll.register(taken_r, select.POLLIN)
    children = set()  # the pids that took a request, until their exits are sent
    stale = False
    spare_at = None  # when to fork the next spare
    while True:
        # The socket is the spares' to read: the interpreter looks at it only for its end, and
        # for a request that waits when there is no spare.
        waiting = not spares.pids and not stale
        poll.modify(sock.fileno(), select.POLLIN if waiting else 0)
        timeout = None
        if spare_at is not None:
            timeout = max(0, int((spare_at - time.monotonic()) * 1000))
        events = dict(poll.poll(timeout))
        ev = events.get(sock.fileno(), 0)
        if ev & (select.POLLHUP | select.POLLERR):
            return 0  # the worker closed its end
        # what the children took comes before their exits
        for kind, pid in _taken(taken_r):
            spares.pids.discard(pid)
            if kind == "S":
                stale = True
            else:
                children.add(pid)
        if wake_r in events:
            _drain(wake_r)
            ended, spare_died = _reap(sock, children, spares)
            if ended:
                spare_at = time.monotonic()  # a quick task ended: fork now, while nothing waits
            elif spare_died and spare_at is None:
                spare_at = time.monotonic() + 1  # killed from outside: not in a loop
        if ev & select.POLLIN and waiting:
            spare_at = time.monotonic()  # a request waits
        if stale:
            if not children:
                return 0
            continue
        if len(spares.pids) >= _SPARES:
            spare_at = None
        elif spare_at is None:
            spare_at = time.monotonic() + _SPARE_DELAY
        elif time.monotonic() >= spare_at:
            spares.fork()
            spare_at = None


class _Spares:
    """The children forked ahead of the next requests (pids, while they wait for one)."""

    def __init__(self, sock, watched, close, taken_w):
        self.sock = sock
        self.watched = watched
        self.close_in_child = close
        self.taken_w = taken_w
        self.die_with_parent = _death_signal()
        self.pids = set()

    def fork(self):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _spare(self.sock, self.watched, self.close_in_child, self.taken_w, self.die_with_parent)
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first
        except OSError:
            pass
        self.pids.add(pid)


def _spare(sock, watched, close, taken_w, die_with_parent):
    """Wait for a request and run it as the attempt's process; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in close:
            os.close(fd)
        die_with_parent()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the interpreter's stdout and stderr are not the attempt's
            os.dup2(null, fd)
        os.close(null)
        _reseed()
        _rehearse(watched)
        while True:
            msg, fds, flags = _recv(sock)
            if not msg and not fds:
                os._exit(0)  # the worker is gone
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != _FDS:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"error": "a request of %d bytes with %d fds: too large or malformed" % (len(msg), len(fds))})
                continue
            break
        pid = os.getpid()
        if _changed(watched):
            _send(sock, {"stale": True})
            os.write(taken_w, b"S%d\n" % pid)  # after: the interpreter may exit at once
            os._exit(0)
        os.write(taken_w, b"T%d\n" % pid)  # before: its exit is sent once it is known as taken
        _send(sock, {"pid": pid})
        sock.close()
        os.close(taken_w)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        req = json.loads(msg.decode("utf-8"))
        _set_environ(req["env"])
        os.chdir(req["cwd"])
        sys.argv[1:] = req["argv"]
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


def _rehearse(watched):
    """Do once, while no request waits, what answering and running one commonly does: the pages
    that writes are copied now rather than while a request waits for them."""
    try:
        _rehearse_steps(watched)
    except Exception:
        pass  # it only saves time


def _rehearse_steps(watched):
    _changed(watched)
    json.loads(json.dumps({"argv": [], "env": {"": ""}, "cwd": "", "pid": 0}))
    with open(os.devnull, "w", encoding="utf-8") as f:
        f.write(json.dumps({"": [1, 1.5, "x", None]}, separators=(",", ":"), sort_keys=True))
    os.environ["ORDO_WARM"] = "1"
    del os.environ["ORDO_WARM"]
    os.chdir(os.getcwd())
    inspect.signature(_rehearse)


def _set_environ(env):
    """Make os.environ the request's: the interpreter's has the same variables but ORDO_* (and
    what importing FILE set, which a fresh interpreter would set too), so only those change."""
    for k in [k for k in os.environ if k.startswith("ORDO_") and k not in env]:
        del os.environ[k]
    for k, v in env.items():
        if os.environ.get(k) != v:
            os.environ[k] = v


def _taken(fd):
    """What the children wrote on the pipe: ("T", pid) took a request, ("S", pid) found the
    modules changed."""
    data = b""
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    except BlockingIOError:
        pass
    return [(line[:1].decode(), int(line[1:])) for line in data.split(b"\n") if line]


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


def _reap(sock, children, spares):
    """Reap the children that ended and send the exits of those that took a request. Return
    whether one ended, and whether a spare did (killed from outside)."""
    ended = spare_died = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid not in children:
            if pid in spares.pids:
                spares.pids.discard(pid)
                spare_died = True
            continue
        children.discard(pid)
        ended = True
        if os.WIFSIGNALED(status):
            _send(sock, {"exit": pid, "signal": os.WTERMSIG(status)})
        elif os.WIFEXITED(status):
            _send(sock, {"exit": pid, "code": os.WEXITSTATUS(status)})
    return ended, spare_died


def _recv(sock):
    """One message and its fds; the message is empty at the end of the socket."""
    size = sock.recv_into(bytearray(1), 1, socket.MSG_PEEK | socket.MSG_TRUNC)
    msg, ancdata, flags, _ = sock.recvmsg(max(size, 1), socket.CMSG_SPACE(_FDS * 4))
    return msg, _received_fds(ancdata), flags


def _received_fds(ancdata):
    fds = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(int.from_bytes(data[i * 4 : i * 4 + 4], sys.byteorder) for i in range(n))
    return fds
