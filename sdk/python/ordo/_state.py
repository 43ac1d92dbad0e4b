"""What the current thread is doing (tracing a flow, running a task) and where the user's code is.

A task call behaves differently in each mode: traced (returns a future), inside a task (runs the
plain function), otherwise local (runs with retries and serialisation). The mode lives here.
"""

import os
import sys
import threading

_ORDO_DIR = os.path.dirname(os.path.abspath(__file__))


class TraceError(Exception):
    """A flow cannot be traced: its message names the file and line and says what to do."""


class _Current(threading.local):
    trace = None  # the deployment being traced (ordo._trace), or None
    task = None  # the TaskRun whose body is running, or None


current = _Current()

# The task an attempt runs (python -m ordo run): threads the task starts are part of it too.
attempt = None


def running_task():
    """The TaskRun whose body is running on this thread, or the attempt's."""
    return current.task or attempt


class TaskRun:
    """One call of a task body: its name, the metrics it logged, its output directory."""

    def __init__(self, name, output_dir=None):
        self.name = name
        self.metrics = {}
        self._output_dir = output_dir

    def output_dir(self):
        import pathlib

        if self._output_dir is None:
            self._output_dir = _temp_dir("ordo-%s-" % self.name)
        return pathlib.Path(self._output_dir)


_temp_dirs = []


def _temp_dir(prefix):
    """A temporary directory removed when the process exits (local runs keep outputs until then)."""
    import atexit
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix=prefix)
    if not _temp_dirs:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _temp_dirs])
    _temp_dirs.append(d)
    return d


def _library_dirs():
    import sysconfig

    dirs = {_ORDO_DIR + os.sep}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            dirs.add(os.path.abspath(p) + os.sep)
    return tuple(dirs)


_libs = None


def _is_library(filename):
    """Whether filename is the standard library's or an installed package's."""
    global _libs
    if _libs is None:
        _libs = _library_dirs()
    return filename.startswith(_libs) or "%ssite-packages%s" % (os.sep, os.sep) in filename or (
        "%sdist-packages%s" % (os.sep, os.sep) in filename
    )


def display_path(filename):
    """filename relative to the working directory when it is under it, else as is."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith(os.pardir) else rel


def user_location(depth=1):
    """'file:line' of the innermost caller that is user code: outside the ordo package and, when
    there is such a frame, outside the standard library and installed packages."""
    frame = sys._getframe(depth)
    fallback = None
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_ORDO_DIR + os.sep):
            if fallback is None:
                fallback = frame
            if not _is_library(filename) and not frame.f_code.co_filename.startswith("<frozen"):
                return "%s:%d" % (display_path(frame.f_code.co_filename), frame.f_lineno)
        frame = frame.f_back
    if fallback is not None:
        return "%s:%d" % (display_path(fallback.f_code.co_filename), fallback.f_lineno)
    return "<unknown>"


def user_traceback(tb):
    """The traceback without the leading frames of the ordo package (the runner, the tracer)."""
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_ORDO_DIR + os.sep):
        tb = tb.tb_next
    return tb


def print_exception(exc, file=None):
    """Print exc's traceback from its first user frame, so its last line is `Type: message`."""
    import traceback

    file = file if file is not None else sys.stderr
    tb = user_traceback(exc.__traceback__) or exc.__traceback__
    traceback.print_exception(type(exc), exc, tb, file=file)


def exception_location(exc):
    """'file:line' of the innermost user frame of exc's traceback (for a decorator or import error)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return "%s:%s" % (display_path(exc.filename), exc.lineno)
    tb = exc.__traceback__
    where = fallback = None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        filename = os.path.abspath(name)
        if not filename.startswith(_ORDO_DIR + os.sep) and not name.startswith("<frozen"):
            loc = "%s:%d" % (display_path(name), tb.tb_lineno)
            fallback = loc
            if not _is_library(filename):
                where = loc
        tb = tb.tb_next
    return where or fallback
