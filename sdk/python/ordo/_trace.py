"""Tracing a flow into deployment documents: `python -m ordo trace FILE FUNCTION [--name NAME]`.

The flow body runs once, in this process, with each parameter a placeholder and each task call
returning a future that stands for the task's result. What the body does with them becomes the
flow's graph:

- a future passed to a task (at any depth of lists, tuples and dicts) is an edge and an input;
  `fut[0]`, `fut["key"]` pass an item of the result; `a, b = fut` works when the task's return
  annotation is a fixed-length tuple (`-> tuple[X, Y]`);
- `wait_for=[fut, ...]` orders tasks without passing data;
- a parameter placeholder passed to a task gives the task the flow run's parameter value;
- any other argument is a constant, which must be JSON (tuples stay tuples);
- calling another @flow makes a sub-flow: a task that starts a run of that flow's own deployment,
  with constant parameters.

The values themselves exist only when the flow runs on Ordo, so using a future or a parameter in
Python control flow or arithmetic (if, for, len, ==, +, int(), str(), ...) raises TraceError,
naming the line, with advice to move that logic into a task. The flow's return value is ignored.

Output (stdout, one JSON object): {"deployments": [{"document": {...}, "sources": {...}}, ...]},
sub-flows first. `sources` maps a document field path prefix ("", "parameters",
"flow.tasks[3]") to the "file:line" it came from. Errors go to stderr with exit status 2.
"""

import json
import os
import sys

from ordo import _state, _values
from ordo._core import Flow, Task
from ordo._state import TraceError


class _Placeholder:
    """A value that exists only when the flow runs: any use of it as a value is a TraceError."""

    __slots__ = ()

    def _what(self):
        raise NotImplementedError

    def _misuse(self, op):
        raise TraceError(
            "%s: %s exists only when the flow runs, so it cannot be %s in the flow body; move this "
            "logic into a task (pass %s to a task and do it there)" % (_state.user_location(), self._what(), op, self._it())
        )

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # protocol probes (copy, numpy, ...) fall back to other operations
        self._misuse("read as an object (.%s)" % name)

    def __setattr__(self, name, value):
        self._misuse("given attributes (.%s)" % name)

    def __delattr__(self, name):
        self._misuse("changed (del .%s)" % name)

    def __reduce_ex__(self, protocol):
        self._misuse("pickled")

    def __repr__(self):
        return "<%s (exists only when the flow runs)>" % self._what()


def _op(name, text):
    def method(self, *args):
        self._misuse(text)

    method.__name__ = name
    return method


_OPERATIONS = {
    "__bool__": "used as a condition (if, while, and, or, not, bool())",
    "__len__": "passed to len()",
    "__contains__": "searched with `in`",
    "__hash__": "hashed (as a set member or dict key)",
    "__int__": "converted with int()",
    "__float__": "converted with float()",
    "__complex__": "converted with complex()",
    "__index__": "used as an index or an int",
    "__round__": "rounded",
    "__trunc__": "truncated",
    "__floor__": "passed to math.floor()",
    "__ceil__": "passed to math.ceil()",
    "__str__": "converted with str() or printed",
    "__format__": "formatted (f-string, format())",
    "__bytes__": "converted with bytes()",
    "__fspath__": "used as a path",
    "__call__": "called",
    "__reversed__": "reversed",
    "__enter__": "used in `with`",
    "__exit__": "used in `with`",
    "__await__": "awaited",
    "__setitem__": "assigned an item",
    "__delitem__": "deleted an item from",
    "__neg__": "used in arithmetic (-x)",
    "__pos__": "used in arithmetic (+x)",
    "__abs__": "passed to abs()",
    "__invert__": "used in arithmetic (~x)",
    "__lt__": "compared (<)",
    "__le__": "compared (<=)",
    "__gt__": "compared (>)",
    "__ge__": "compared (>=)",
    "__eq__": "compared (==)",
    "__ne__": "compared (!=)",
}
for _sym, _name in (
    ("+", "add"), ("-", "sub"), ("*", "mul"), ("@", "matmul"), ("/", "truediv"), ("//", "floordiv"),
    ("%", "mod"), ("divmod", "divmod"), ("**", "pow"), ("<<", "lshift"), (">>", "rshift"),
    ("&", "and"), ("^", "xor"), ("|", "or"),
):
    for _fmt in ("__%s__", "__r%s__", "__i%s__"):
        _OPERATIONS[_fmt % _name] = "used in arithmetic (%s)" % _sym
for _n, _t in _OPERATIONS.items():
    setattr(_Placeholder, _n, _op(_n, _t))
_Placeholder.__iter__ = _op("__iter__", "iterated over (for, list(), unpacking)")
_Placeholder.__getitem__ = _op("__getitem__", "indexed")


class Future(_Placeholder):
    """The result of a traced task call (or an item of it)."""

    __slots__ = ("_task", "_item", "_annotation")

    def __init__(self, task, item=(), annotation=None):
        object.__setattr__(self, "_task", task)
        object.__setattr__(self, "_item", tuple(item))
        object.__setattr__(self, "_annotation", annotation)

    def _what(self):
        item = "".join("[%r]" % k for k in self._item)
        return "the result of task %r%s" % (self._task, item)

    def _it(self):
        return "the result"

    def __getitem__(self, key):
        if isinstance(key, _Placeholder):
            key._misuse("used as an index")
        if type(key) not in (int, str):
            raise TraceError(
                "%s: indexing %s with %r: only a constant int or str index can be passed to a task; "
                "do the rest in a task" % (_state.user_location(), self._what(), key)
            )
        return Future(self._task, self._item + (key,), _item_annotation(self._annotation, key))

    def result(self, raise_on_failure=True):
        """As Prefect's future.result(): in a traced flow the result is this future itself."""
        return self

    def wait(self, timeout=None):
        return None

    def __iter__(self):
        n = _tuple_length(self._annotation)
        if n is None:
            raise TraceError(
                "%s: %s exists only when the flow runs, so it cannot be unpacked or iterated over "
                "unless its length is known: annotate the task's return as a fixed-length tuple "
                "(-> tuple[X, Y]) or index it (result[0])"
                % (_state.user_location(), self._what())
            )
        return iter([self[i] for i in range(n)])


class Parameter(_Placeholder):
    """A flow parameter while the flow is traced."""

    __slots__ = ("_name",)

    def __init__(self, name):
        object.__setattr__(self, "_name", name)

    def _what(self):
        return "the value of flow parameter %r" % self._name

    def _it(self):
        return "the parameter"


def _typing():
    import typing

    return typing


def _tuple_length(annotation):
    """The length of a fixed-length tuple annotation, else None."""
    if annotation is None:
        return None
    t = _typing()
    if t.get_origin(annotation) is not tuple:
        return None
    args = t.get_args(annotation)
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        return None
    if args == ((),):
        return 0
    return len(args)


def _item_annotation(annotation, key):
    if isinstance(key, int) and _tuple_length(annotation) is not None:
        args = _typing().get_args(annotation)
        if -len(args) <= key < len(args):
            return args[key]
    return None


def _return_annotation(fn):
    try:
        return _typing().get_type_hints(fn).get("return")
    except Exception:
        return getattr(fn, "__annotations__", {}).get("return")


def _special(value):
    """Whether value holds a placeholder or a tuple, at any depth (then it binds as a structure)."""
    if isinstance(value, (_Placeholder, tuple)):
        return True
    if isinstance(value, list):
        return any(_special(v) for v in value)
    if isinstance(value, dict):
        return any(_special(v) for v in value.values())
    return False


def _json_constant(value):
    """value as JSON when it is JSON with tuples allowed (as lists), else raise ValueError."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        return [_json_constant(v) for v in value]
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise ValueError("a dict with keys that are not strings")
        return {k: _json_constant(v) for k, v in value.items()}
    if not _values.is_json(value):
        raise ValueError("a %s" % _values.type_name(value))
    return value


def _location(fn):
    """'file:line' of fn's def line."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return "<unknown>"
    line = code.co_firstlineno
    try:
        import inspect

        lines, start = inspect.getsourcelines(fn)
        for i, text in enumerate(lines):
            if text.lstrip().startswith(("def ", "async def ")):
                line = start + i
                break
    except (OSError, TypeError):
        pass
    return "%s:%d" % (_state.display_path(code.co_filename), line)


class _Deployment:
    """One flow being traced into one deployment document."""

    def __init__(self, tracer, flow, name):
        self.tracer = tracer
        self.flow = flow
        self.name = name
        self.tasks = []
        self.sources = {}
        self.names = set()

    def _unique(self, name):
        if name not in self.names:
            self.names.add(name)
            return name
        n = 2
        while "%s-%d" % (name, n) in self.names:
            n += 1
        name = "%s-%d" % (name, n)
        self.names.add(name)
        return name

    def _add(self, spec, loc):
        self.sources["flow.tasks[%d]" % len(self.tasks)] = self.tracer.source(loc)
        self.tasks.append(spec)

    def _wait_for(self, wait_for, loc, deps):
        if wait_for is None:
            return
        items = wait_for if isinstance(wait_for, (list, tuple)) else [wait_for]
        for f in items:
            if isinstance(f, (list, tuple)):
                self._wait_for(f, loc, deps)
            elif isinstance(f, Future):
                if f._task not in deps:
                    deps.append(f._task)
            else:
                raise TraceError(
                    "%s: wait_for takes the results of task or sub-flow calls in this flow, got %s"
                    % (loc, _values.short_repr(f, 80))
                )

    def _bind(self, what, obj, args, kwargs):
        """The call site and the call's arguments bound to obj's parameters."""
        loc = _state.user_location()
        try:
            return loc, obj.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TraceError("%s: calling %s %r: %s" % (loc, what, obj.name, e)) from None

    def task_call(self, task, args, kwargs, wait_for):
        loc, bound = self._bind("task", task, args, kwargs)
        sig = task.signature
        deps = []

        def bind(value, arg):
            if isinstance(value, Future):
                if value._task not in deps:
                    deps.append(value._task)
                b = {"task": value._task}
                if value._item:
                    b["item"] = list(value._item)
                return b
            if isinstance(value, Parameter):
                return {"param": value._name}
            if _special(value):
                if isinstance(value, tuple):
                    return {"tuple": [bind(v, "%s[%d]" % (arg, i)) for i, v in enumerate(value)]}
                if isinstance(value, list):
                    return {"list": [bind(v, "%s[%d]" % (arg, i)) for i, v in enumerate(value)]}
                for k in value:
                    if type(k) is not str:
                        raise TraceError(
                            "%s: task %r argument %r: a dict passed to a task must have string keys, got %r"
                            % (loc, task.name, arg, k)
                        )
                return {"dict": {k: bind(v, "%s[%r]" % (arg, k)) for k, v in value.items()}}
            if not _values.is_json(value):
                raise TraceError(
                    "%s: task %r argument %r is a %s, which is not a JSON constant: a constant passed "
                    "to a task in the flow body must be JSON (str, int, float, bool, None, lists, tuples, "
                    "dicts with str keys); create other values inside a task"
                    % (loc, task.name, arg, _values.type_name(value))
                )
            return {"value": value}

        params = sig.parameters
        bindings = {}
        for pname, value in bound.arguments.items():
            kind = params[pname].kind
            if kind is params[pname].VAR_POSITIONAL:
                bindings[pname] = {"tuple": [bind(v, "%s[%d]" % (pname, i)) for i, v in enumerate(value)]}
            elif kind is params[pname].VAR_KEYWORD:
                bindings[pname] = {"dict": {k: bind(v, k) for k, v in value.items()}}
            else:
                bindings[pname] = bind(value, pname)
        self._wait_for(wait_for, loc, deps)

        name = self._unique(task.name)
        function = self.tracer.function_name(task, loc)
        args_json = json.dumps(bindings, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        spec = {"name": name, "command": ["python3", "-m", "ordo", "run", self.tracer.file, function, "--args", args_json]}
        if deps:
            spec["depends_on"] = deps
        spec.update(task.spec_options())
        self._add(spec, loc)
        return Future(name, (), _return_annotation(task.fn))

    def flow_call(self, flow, args, kwargs, wait_for):
        loc, bound = self._bind("sub-flow", flow, args, kwargs)
        sig = flow.signature
        parameters = {}
        for pname, value in bound.arguments.items():
            kind = sig.parameters[pname].kind
            if kind is sig.parameters[pname].VAR_POSITIONAL:
                if value:
                    raise TraceError("%s: sub-flow %r: *%s cannot be passed to a sub-flow's deployment" % (loc, flow.name, pname))
                continue
            values = value if kind is sig.parameters[pname].VAR_KEYWORD else {pname: value}
            for k, v in values.items():
                if not _json_free_of_placeholders(v):
                    raise TraceError(
                        "%s: sub-flow %r parameter %r is a value known only when the flow runs; a "
                        "sub-flow's parameters are constants of its deployment: pass a constant, or make "
                        "%r a task" % (loc, flow.name, k, flow.name)
                    )
                try:
                    parameters[k] = _json_constant(v)
                except ValueError as e:
                    raise TraceError(
                        "%s: sub-flow %r parameter %r is %s, which is not JSON; a sub-flow's parameters "
                        "must be JSON constants" % (loc, flow.name, k, e)
                    ) from None
        deps = []
        self._wait_for(wait_for, loc, deps)
        child = self.tracer.trace_child(self, flow, loc)
        name = self._unique(flow.name)
        spec = {"name": name, "deployment": child}
        if parameters:
            spec["parameters"] = parameters
        if deps:
            spec["depends_on"] = deps
        self._add(spec, loc)
        return Future(name)


def _json_free_of_placeholders(value):
    if isinstance(value, _Placeholder):
        return False
    if isinstance(value, (list, tuple)):
        return all(_json_free_of_placeholders(v) for v in value)
    if isinstance(value, dict):
        return all(_json_free_of_placeholders(v) for v in value.values())
    return True


class Tracer:
    """Traces a flow of a module (loaded from file) and the sub-flows it calls."""

    def __init__(self, module, file):
        self.module = module
        self.file = file
        self._abs_file = os.path.abspath(file)
        self.deployments = []  # finished, sub-flows before their parents
        self._by_name = {}  # deployment name -> flow
        self._stack = []
        self._functions = {}

    def source(self, loc):
        """loc with the flow file named as FILE was given."""
        path, _, line = loc.rpartition(":")
        if path and os.path.abspath(path) == self._abs_file:
            return "%s:%s" % (self.file, line)
        return loc

    def function_name(self, task, loc):
        """The module-level name by which the worker finds task's function in the flow file."""
        key = id(task)
        if key in self._functions:
            return self._functions[key]
        found = None
        for attr, value in vars(self.module).items():
            if value is task:
                found = attr
                break
            if found is None and isinstance(value, Task) and value.fn is task.fn:
                found = attr
        if found is None:
            raise TraceError(
                "%s: task %r is not a module-level name of %s: the worker imports that file and finds "
                "the task by its name there, so define it (or import it) at the top level of the file"
                % (loc, task.name, self.file)
            )
        self._functions[key] = found
        return found

    def trace(self, flow, name):
        """Trace flow as the deployment called name; returns its document."""
        if any(f is flow for f in self._stack):
            raise TraceError("%s: flow %r calls itself as a sub-flow" % (_location(flow.fn), flow.name))
        self._by_name[name] = flow
        dep = _Deployment(self, flow, name)
        def_loc = self.source(_location(flow.fn))
        parameters, schema, placeholders = _parameters(flow, def_loc)
        cur = _state.current
        saved = (cur.trace, cur.task)
        cur.trace, cur.task = dep, None
        self._stack.append(flow)
        try:
            args, kwargs = placeholders
            flow.fn(*args, **kwargs)
        finally:
            self._stack.pop()
            cur.trace, cur.task = saved
        document = {"name": name}
        if flow.description:
            document["description"] = flow.description
        document["parameters"] = parameters
        document["parameters_schema"] = schema
        document["flow"] = {"name": flow.name, "tasks": dep.tasks}
        sources = {"": def_loc, "parameters": def_loc}
        sources.update(dep.sources)
        self.deployments.append({"document": document, "sources": sources})
        return document

    def trace_child(self, parent, flow, loc):
        name = "%s.%s" % (parent.name, flow.name)
        known = self._by_name.get(name)
        if known is not None:
            if known.fn is not flow.fn:
                raise TraceError("%s: two different sub-flows are named %r; give one another name=" % (loc, flow.name))
            return name
        if any(f.fn is flow.fn for f in self._stack):
            raise TraceError("%s: flow %r calls itself as a sub-flow, which cannot be deployed" % (loc, flow.name))
        self.trace(flow, name)
        return name


def _parameters(flow, def_loc):
    """The flow's default parameters, their JSON Schema and the placeholders to call it with."""
    sig = flow.signature
    try:
        hints = _typing().get_type_hints(flow.fn)
    except Exception:
        hints = dict(getattr(flow.fn, "__annotations__", {}))
    defaults, props, required = {}, {}, []
    args, kwargs = [], {}
    additional = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            additional = True
            continue
        prop = _schema(hints.get(p.name)) if p.name in hints else {}
        if p.default is p.empty:
            required.append(p.name)
        else:
            try:
                defaults[p.name] = _json_constant(p.default)
            except ValueError as e:
                raise TraceError(
                    "%s: flow %r parameter %r: its default is %s, which is not JSON; a deployment's "
                    "parameters are JSON" % (def_loc, flow.name, p.name, e)
                ) from None
            if p.default is None and prop and not _allows_null(prop):
                prop = {"anyOf": [prop, {"type": "null"}]}  # `x: int = None` means an optional int
            prop = dict(prop, default=defaults[p.name])
        props[p.name] = prop
        if p.kind is p.POSITIONAL_ONLY:
            args.append(Parameter(p.name))
        else:
            kwargs[p.name] = Parameter(p.name)
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    if not additional:
        schema["additionalProperties"] = False
    return defaults, schema, (args, kwargs)


def _allows_null(schema):
    return schema.get("type") == "null" or any(_allows_null(s) for s in schema.get("anyOf", ()))


def _schema(hint):
    """A JSON Schema for a type hint; {} (no constraint) for what it cannot express."""
    import types

    t = _typing()
    if hint is None or hint is type(None):
        return {"type": "null"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint is list or hint is tuple or hint is set or hint is frozenset:
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    origin, args = t.get_origin(hint), t.get_args(hint)
    if origin is t.Annotated:
        return _schema(args[0])
    if origin is t.Union or (getattr(types, "UnionType", None) is not None and origin is types.UnionType):
        return {"anyOf": [_schema(a) for a in args]}
    if origin is t.Literal:
        values = [v for v in args if _values.is_json(v)]
        return {"enum": values}
    if origin in (list, set, frozenset):
        return {"type": "array", "items": _schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if not args:
            return {"type": "array"}
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0])}
        if args == ((),):
            return {"type": "array", "maxItems": 0}
        return {
            "type": "array",
            "prefixItems": [_schema(a) for a in args],
            "items": False,
            "minItems": len(args),
        }
    if origin is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": _schema(args[1])}
        return {"type": "object"}
    return {}


def trace(module, file, flow, name=None):
    """Trace flow (an attribute of module, loaded from file) into {"deployments": [...]}."""
    tracer = Tracer(module, file)
    tracer.trace(flow, name or flow.name)
    return {"deployments": tracer.deployments}


def main(argv):
    """`python -m ordo trace FILE FUNCTION [--name NAME]`; returns the exit status."""
    from ordo._cli import parse

    try:
        file, function, name = parse(argv, "--name", "usage: python -m ordo trace FILE FUNCTION [--name NAME]")
    except ValueError as e:
        print("python -m ordo trace: %s" % e, file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        import contextlib

        # the flow file's and the flow body's prints must not mix with the JSON on stdout
        with contextlib.redirect_stdout(sys.stderr):
            code, result = _trace_file(file, function, name)
        if code:
            return code
        out.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        return 0
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _trace_file(file, function, name):
    from ordo import _runner

    if not os.path.isfile(file):
        print("python -m ordo trace: %s: no such file" % file, file=sys.stderr)
        return 2, None
    try:
        module = _runner.load_flow_module(file)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        _state.print_exception(e)
        print("%s: cannot import %s: %s: %s" % (_state.exception_location(e) or file, file, type(e).__name__, e), file=sys.stderr)
        return 2, None
    obj = getattr(module, function, None)
    if not isinstance(obj, Flow):
        what = "has no %r" % function if obj is None else "%r is a %s, not a @flow" % (function, _values.type_name(obj))
        print("python -m ordo trace: %s %s" % (file, what), file=sys.stderr)
        return 2, None
    try:
        return 0, trace(module, file, obj, name)
    except TraceError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2, None
    except Exception as e:
        _state.print_exception(e)
        where = _state.exception_location(e) or file
        print("%s: flow %r failed while it was traced: %s: %s" % (where, obj.name, type(e).__name__, e), file=sys.stderr)
        return 2, None
