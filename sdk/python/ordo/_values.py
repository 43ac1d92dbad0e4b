"""How values travel between tasks, and what a task body may call: metrics, outputs, the logger.

A return value that is JSON (dicts with str keys, lists, str, int, float, bool, None; no NaN or
infinity) and at most 1 MiB compact is the task's result as is, so it shows in the UI. Anything
else is pickled (protocol 4) into the task's output directory, or for larger JSON written there,
and the result is a descriptor naming that output:

    {"__ordo_value__": {"output": "_return.pkl", "format": "pickle", "type": "...", "repr": "..."}}

A local run passes every argument and return value through the same encoding, so a value that
could not travel on Ordo fails locally too.
"""

import io
import json
import math
import os
import sys

from ordo import _state

MAX_JSON_BYTES = 1 << 20
VALUE_KEY = "__ordo_value__"
PICKLE_OUTPUT = "_return.pkl"
JSON_OUTPUT = "_return.json"


class ValueTravelError(TypeError):
    """A value cannot be serialised to travel between tasks."""


def is_json(value):
    """Whether value is JSON as the contract means it (tuples and non-str keys are not)."""
    try:
        return _is_json(value)
    except RecursionError:
        return False


def _is_json(v):
    t = type(v)
    if v is None or t is str or t is bool or t is int:
        return True
    if isinstance(v, float) and t is not bool:
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_is_json(x) for x in v)
    if isinstance(v, dict):
        return all(type(k) is str and _is_json(x) for k, x in v.items())
    return False


def dumps(value):
    """Compact JSON, as results and arguments are written."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def type_name(value):
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)


def short_repr(value, limit=200):
    try:
        r = repr(value)
    except Exception as e:  # a broken __repr__ must not fail the task
        r = "<%s: repr failed: %s>" % (type_name(value), e)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def is_descriptor(obj):
    return isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get(VALUE_KEY), dict)


def store(value, create):
    """Encode a return value; returns the result's JSON text. create(output name) opens a binary
    file for writing, used when the value is pickled or is JSON over 1 MiB: the value is written
    to it as it is encoded, without a copy in memory."""
    if is_json(value) and not (isinstance(value, dict) and VALUE_KEY in value):
        text = dumps(value)
        data = text.encode("utf-8")
        if len(data) <= MAX_JSON_BYTES:
            return text
        name, fmt = JSON_OUTPUT, "json"
        with create(name) as f:
            f.write(data)
    else:
        import pickle

        name, fmt = PICKLE_OUTPUT, "pickle"
        try:
            with create(name) as f:
                pickle.dump(value, f, protocol=4)
        except Exception as e:
            raise ValueTravelError(
                "a %s cannot be pickled, so it cannot be passed between tasks (%s: %s); "
                "return something picklable, or write it to ordo.output_dir()" % (type_name(value), type(e).__name__, e)
            ) from e
    return dumps({VALUE_KEY: {"output": name, "format": fmt, "type": type_name(value), "repr": short_repr(value)}})


class _Sink(io.BytesIO):
    def close(self):
        self.data = self.getvalue()
        super().close()


def encode(value):
    """store in memory: (result JSON text, output name or None, its bytes or None)."""
    sinks = {}

    def create(name):
        sinks[name] = _Sink()
        return sinks[name]

    text = store(value, create)
    for name, sink in sinks.items():
        return text, name, sink.data
    return text, None, None


def decode(obj, open_output):
    """The value a result stands for; open_output(output name) opens a descriptor's output (binary)."""
    if not is_descriptor(obj):
        return obj
    d = obj[VALUE_KEY]
    fmt = d.get("format")
    if fmt not in ("pickle", "json"):
        raise ValueError("unknown value format %r in %s" % (fmt, d.get("output")))
    with open_output(d["output"]) as f:
        if fmt == "pickle":
            import pickle

            return pickle.load(f)
        return json.load(f)


def roundtrip(value):
    """value as the next task would receive it on Ordo."""
    text, _, data = encode(value)
    return decode(json.loads(text), lambda name: io.BytesIO(data))


class Metrics(dict):
    """Numbers to record as the task's metrics, returned from a task: `return Metrics(r2=0.96)`.

    It is a dict, so it is also the task's (JSON) return value. Names are strings, values finite
    int or float numbers; anything else raises TypeError or ValueError here.
    """

    def __init__(self, *args, **numbers):
        super().__init__(*args, **numbers)
        check_metrics(self)
        for k, v in self.items():
            if type(v) not in (int, float):  # numpy scalars become plain numbers, so this stays JSON
                self[k] = float(v)


def check_metrics(numbers):
    for name, v in numbers.items():
        if not isinstance(name, str):
            raise TypeError("metric names must be strings, got %r" % (name,))
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:  # numpy and similar scalars
                import numbers as _n

                ok = isinstance(v, _n.Real) and not isinstance(v, bool)
            except Exception:
                ok = False
            if not ok:
                raise TypeError("metric %r must be a number, got %s" % (name, type_name(v)))
        if not math.isfinite(float(v)):
            raise ValueError("metric %r must be a finite number, got %r" % (name, v))


def log_metrics(**numbers):
    """Record numbers as metrics of the running task: `ordo.log_metrics(rmse=12.1, r2=0.96)`.

    Called several times, later values replace earlier ones of the same name; a returned Metrics
    is merged over them. Outside a task (a flow body run locally) they are only logged.
    """
    check_metrics(numbers)
    run = _state.running_task()
    if run is None:
        get_run_logger().info("metrics %s", dumps({k: float(v) for k, v in numbers.items()}))
        return
    run.metrics.update({k: v if type(v) in (int, float) else float(v) for k, v in numbers.items()})


_process_output_dir = None


def output_dir():
    """A pathlib.Path where the running task may write files kept as its outputs.

    On Ordo it is ORDO_OUTPUT_DIR: every file left there when the task succeeds is stored and
    delivered to the tasks that depend on it under ORDO_INPUT_DIR/<task>/. Run locally, each task
    call gets a new temporary directory, removed when the process exits.
    """
    global _process_output_dir
    run = _state.running_task()
    if run is not None:
        return run.output_dir()
    import pathlib

    env = os.environ.get("ORDO_OUTPUT_DIR")
    if env:
        return pathlib.Path(env)
    if _process_output_dir is None:
        _process_output_dir = _state._temp_dir("ordo-")
    return pathlib.Path(_process_output_dir)


_logger = None


def get_run_logger():
    """A logging.Logger for flow and task code: "LEVEL message" lines, INFO and below to stdout and
    WARNING and above to stderr, which are the task's log on Ordo. (print goes to the log too.)"""
    global _logger
    if _logger is None:
        import logging

        class _StdHandler(logging.Handler):
            # looks up sys.stdout at each line, so redirections (and a warm child's fds) apply
            def emit(self, record):
                try:
                    stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
                    stream.write(self.format(record) + "\n")
                    stream.flush()
                except Exception:
                    self.handleError(record)

        logger = logging.getLogger("ordo.run")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        h = _StdHandler()
        h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(h)
        _logger = logger
    return _logger
