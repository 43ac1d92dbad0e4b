"""Runs one task attempt inside a worker: `python -m ordo run FILE FUNCTION [--args JSON]`.

FUNCTION is the module-level name of a @task in FILE; --args binds its arguments (see
ordo._trace): {"param": NAME} from ORDO_PARAMETERS, {"task": NAME, "item": [...]} from an
upstream task's result in ORDO_INPUTS (read from ORDO_INPUT_DIR/<task>/ when it is a descriptor of
a pickled or large value), {"value": JSON}, and {"list"|"tuple"|"dict": ...} of those. The return
value is stored as ordo._values describes, the metrics (ordo.log_metrics, a returned
ordo.Metrics) in ORDO_METRICS_PATH.

Exit status: 0 success, 1 the task raised (its traceback on stderr, ending with `Type: message`),
2 a usage or load error.

The warm interpreter (ordo._warm) imports FILE once with load_flow_module and calls main in a
forked child for each attempt, so main neither exits the process nor caches anything that
depends on the environment.
"""

import importlib.util
import json
import os
import sys

from ordo import _state, _values

_modules = {}


class _UsageError(Exception):
    pass


def _module_name(path):
    base = os.path.splitext(os.path.basename(path))[0]
    name = "ordo_flow_" + "".join(c if c.isalnum() or c == "_" else "_" for c in base)
    # another file of the same name already imported in this process keeps its module
    n = 2
    candidate = name
    while candidate in sys.modules and getattr(sys.modules[candidate], "__file__", None) != path:
        candidate = "%s_%d" % (name, n)
        n += 1
    return candidate


def load_flow_module(path):
    """Import the flow file at path (once per process), with its directory first on sys.path.

    The module is registered in sys.modules as ordo_flow_<file name>, the same name in every
    process, so values pickled from classes the flow file defines load in the next task."""
    path = os.path.abspath(path)
    mod = _modules.get(path)
    if mod is not None:
        return mod
    directory = os.path.dirname(path)
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ImportError("cannot import %s: not a Python file" % path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    _modules[path] = mod
    return mod


def _parse(argv):
    from ordo._cli import parse

    try:
        path, function, args = parse(argv, "--args", "usage: python -m ordo run FILE FUNCTION [--args JSON]")
    except ValueError as e:
        raise _UsageError(str(e))
    if args is None:
        args = "{}"
    try:
        bindings = json.loads(args)
    except ValueError as e:
        raise _UsageError("--args is not JSON: %s" % e)
    if not isinstance(bindings, dict):
        raise _UsageError("--args must be a JSON object of argument bindings")
    return path, function, bindings


def _env_json(name):
    text = os.environ.get(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise _UsageError("%s is not JSON: %s" % (name, e))
    if not isinstance(value, dict):
        raise _UsageError("%s must be a JSON object" % name)
    return value


class _Inputs:
    """Upstream values, each loaded once per attempt."""

    def __init__(self):
        self.results = _env_json("ORDO_INPUTS")
        self.parameters = _env_json("ORDO_PARAMETERS")
        self.loaded = {}

    def task(self, name):
        if name in self.loaded:
            return self.loaded[name]
        if name not in self.results:
            raise _UsageError("the result of task %r is not among this task's inputs (ORDO_INPUTS)" % name)

        def open_output(output):
            base = os.environ.get("ORDO_INPUT_DIR")
            if not base:
                raise _UsageError("ORDO_INPUT_DIR is not set, so output %r of task %r cannot be read" % (output, name))
            return open(os.path.join(base, name, output), "rb")

        try:
            value = _values.decode(self.results[name], open_output)
        except _UsageError:
            raise
        except Exception as e:
            raise _UsageError("cannot load the result of task %r: %s: %s" % (name, type(e).__name__, e))
        self.loaded[name] = value
        return value

    def resolve(self, b):
        if not isinstance(b, dict) or len(b) not in (1, 2):
            raise _UsageError("bad argument binding %s" % json.dumps(b)[:200])
        if "value" in b:
            return b["value"]
        if "param" in b:
            name = b["param"]
            if name not in self.parameters:
                raise _UsageError("flow parameter %r is not in ORDO_PARAMETERS" % name)
            return self.parameters[name]
        if "task" in b:
            value = self.task(b["task"])
            for k in b.get("item", ()):
                try:
                    value = value[k]
                except Exception as e:
                    raise _UsageError("item %r of task %r's result: %s: %s" % (k, b["task"], type(e).__name__, e))
            return value
        if "list" in b:
            return [self.resolve(x) for x in b["list"]]
        if "tuple" in b:
            return tuple(self.resolve(x) for x in b["tuple"])
        if "dict" in b:
            return {k: self.resolve(x) for k, x in b["dict"].items()}
        raise _UsageError("bad argument binding %s" % json.dumps(b)[:200])


def _call_arguments(fn, bindings, inputs):
    """Positional and keyword arguments for fn from the bindings, in fn's parameter order."""
    import inspect

    sig = inspect.signature(fn)
    for name in bindings:
        if name not in sig.parameters:
            raise _UsageError(
                "task function %s has no parameter %r; was the file changed since the flow was deployed?"
                % (getattr(fn, "__name__", fn), name)
            )
    args, kwargs = [], {}
    positional = True
    for p in sig.parameters.values():
        if p.name not in bindings:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                positional = False
            continue
        value = inputs.resolve(bindings[p.name])
        if p.kind is p.VAR_POSITIONAL:
            args.extend(value)
        elif p.kind is p.VAR_KEYWORD:
            kwargs.update(value)
        elif p.kind is p.POSITIONAL_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and positional):
            args.append(value)
        else:
            kwargs[p.name] = value
    return args, kwargs


def _write(path, data, mode="w"):
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(data)


def main(argv):
    """Run the task FUNCTION of FILE; return the process's exit status (never exits)."""
    try:
        return _main(argv)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


def _main(argv):
    from ordo._core import Task

    for stream in (sys.stdout, sys.stderr):
        # each line reaches the task's log as it is printed
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(line_buffering=True)
            except Exception:
                pass
    try:
        path, function, bindings = _parse(argv)
    except _UsageError as e:
        print("python -m ordo run: %s" % e, file=sys.stderr)
        return 2
    if not os.path.isfile(path):
        print("python -m ordo run: %s: no such file (relative to %s)" % (path, os.getcwd()), file=sys.stderr)
        return 2
    try:
        module = load_flow_module(path)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        _state.print_exception(e)
        print("python -m ordo run: cannot import %s: %s: %s" % (path, type(e).__name__, e), file=sys.stderr)
        return 2
    obj = getattr(module, function, None)
    if obj is None or not callable(obj):
        print("python -m ordo run: %s has no task %r" % (path, function), file=sys.stderr)
        return 2
    fn = obj.fn if isinstance(obj, Task) else obj
    name = obj.name if isinstance(obj, Task) else function
    try:
        inputs = _Inputs()
        args, kwargs = _call_arguments(fn, bindings, inputs)
    except _UsageError as e:
        print("python -m ordo run: task %r: %s" % (name, e), file=sys.stderr)
        return 2

    cur = _state.current
    run = _state.TaskRun(name, os.environ.get("ORDO_OUTPUT_DIR") or None)
    saved = (cur.trace, cur.task, _state.attempt)
    cur.trace, cur.task, _state.attempt = None, run, run
    try:
        result = fn(*args, **kwargs)
    except SystemExit as e:
        if e.code in (None, 0):
            result = None
        else:
            _state.print_exception(e)
            return e.code if isinstance(e.code, int) else 1
    except BaseException as e:
        _state.print_exception(e)
        return 1
    finally:
        cur.trace, cur.task, _state.attempt = saved

    try:
        if isinstance(result, _values.Metrics):
            run.metrics.update(result)
        metrics_path = os.environ.get("ORDO_METRICS_PATH")
        if run.metrics and metrics_path:
            _write(metrics_path, _values.dumps(run.metrics))
        result_path = os.environ.get("ORDO_RESULT_PATH")
        if result_path:

            def create(output):
                out_dir = os.environ.get("ORDO_OUTPUT_DIR")
                if not out_dir:
                    raise RuntimeError("ORDO_OUTPUT_DIR is not set, and a %s must be stored there" % _values.type_name(result))
                return open(os.path.join(out_dir, output), "wb")

            _write(result_path, _values.store(result, create), "w")
    except Exception as e:
        _state.print_exception(e)
        return 1
    return 0
