"""The @task and @flow decorators and what a call of a decorated function does in each mode."""

import functools
import math
import re
import time

from ordo import _state, _values

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(where, arg, value):
    if not isinstance(value, str):
        raise TypeError("%s: %s must be a string, got %s" % (where, arg, _values.type_name(value)))
    if not (0 < len(value) <= 100 and value[0].isascii() and value[0].isalnum() and set(value) <= _NAME_CHARS):
        raise ValueError(
            "%s: %s=%r is not a valid name: use 1 to 100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit" % (where, arg, value)
        )
    return value


def _check_env_name(where, arg, name):
    if not isinstance(name, str) or not _ENV_NAME.match(name) or name.startswith("ORDO_"):
        raise ValueError(
            "%s: %s: %r is not a variable a task may set or inherit: use letters, digits and '_', "
            "not starting with a digit, and not ORDO_*" % (where, arg, name)
        )


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _seconds(where, arg, value, allow_zero):
    """A number of seconds, or a timedelta, as an int when whole."""
    if hasattr(value, "total_seconds") and not isinstance(value, (int, float)):
        value = value.total_seconds()
    if not _is_number(value):
        raise TypeError("%s: %s must be a number of seconds, got %r" % (where, arg, value))
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError("%s: %s must be %s, got %r" % (where, arg, "at least 0" if allow_zero else "positive", value))
    return int(value) if float(value).is_integer() else float(value)


class _Decorated:
    """What @task and @flow objects share: the plain function, its signature, copies."""

    _OPTIONS = ()
    _KIND = ""

    def _wrap(self, fn, options):
        """Keep fn and the decorator's options; returns the 'where' of error messages."""
        import inspect

        if not callable(fn):
            raise TypeError("@%s decorates a function, got %s" % (self._KIND, _values.type_name(fn)))
        where = "@%s on %r" % (self._KIND, getattr(fn, "__name__", fn))
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError("%s: async functions are not supported; write a plain def" % where)
        functools.update_wrapper(self, fn)
        self.fn = fn
        self._options = options
        self._sig = None
        self.name = _check_name(where, "name", options["name"] if options["name"] is not None else fn.__name__)
        log_prints = options.get("log_prints")
        if log_prints is not None and not isinstance(log_prints, bool):
            raise TypeError("%s: log_prints must be True or False, got %r" % (where, log_prints))
        return where

    @property
    def signature(self):
        if self._sig is None:
            import inspect

            self._sig = inspect.signature(self.fn)
        return self._sig

    def with_options(self, **options):
        """A copy with some of the decorator's arguments changed (the same arguments)."""
        for k in options:
            if k not in self._OPTIONS:
                raise TypeError("with_options() got an unexpected argument %r" % k)
        return type(self)(self.fn, **dict(self._options, **options))

    def __repr__(self):
        return "<ordo %s %r>" % (self._KIND, self.name)


def _decorator(cls, fn, options):
    """@cls, @cls() and @cls(**options) alike."""
    if fn is not None:
        if options or not callable(fn):
            raise TypeError("use @%s, or @%s(...) with keyword arguments" % (cls._KIND, cls._KIND))
        return cls(fn)
    for k in options:
        if k not in cls._OPTIONS:
            raise TypeError("@%s got an unexpected argument %r" % (cls._KIND, k))
    return lambda fn: cls(fn, **options)


class Task(_Decorated):
    """A function decorated with @task. Call it in a flow; `.fn` is the plain function.

    In a flow traced for deployment a call returns a future (the task's result once the flow runs
    on Ordo); in a flow run locally it runs the function at once, with retries, and returns the
    value as the next task would receive it; called from inside another task it is the plain
    function.
    """

    _KIND = "task"
    _OPTIONS = (
        "name",
        "retries",
        "retry_delay_seconds",
        "timeout_seconds",
        "tags",
        "cache_key_fn",
        "cache_expiration",
        "work_queue",
        "log_prints",
        "env",
        "inherit_env",
    )

    def __init__(
        self,
        fn,
        name=None,
        retries=0,
        retry_delay_seconds=0,
        timeout_seconds=None,
        tags=None,
        cache_key_fn=None,
        cache_expiration=None,
        work_queue=None,
        log_prints=None,
        env=None,
        inherit_env=None,
    ):
        arguments = locals()
        where = self._wrap(fn, {k: arguments[k] for k in self._OPTIONS})

        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError("%s: retries must be an integer, got %r" % (where, retries))
        if retries < 0:
            raise ValueError("%s: retries must be at least 0, got %d" % (where, retries))
        self.retries = retries

        if isinstance(retry_delay_seconds, (list, tuple)):
            delays = []
            for i, d in enumerate(retry_delay_seconds):
                delays.append(_seconds(where, "retry_delay_seconds[%d]" % i, d, True))
            self.retry_delay_seconds = delays
        elif _is_number(retry_delay_seconds) or hasattr(retry_delay_seconds, "total_seconds"):
            self.retry_delay_seconds = _seconds(where, "retry_delay_seconds", retry_delay_seconds, True)
        else:
            raise TypeError(
                "%s: retry_delay_seconds must be a number of seconds or a list of numbers, got %r"
                % (where, retry_delay_seconds)
            )

        self.timeout_seconds = None
        if timeout_seconds is not None:
            self.timeout_seconds = _seconds(where, "timeout_seconds", timeout_seconds, False)

        if tags is None:
            tags = []
        if isinstance(tags, str) or not isinstance(tags, (list, tuple, set, frozenset)):
            raise TypeError("%s: tags must be a list of strings, got %r" % (where, tags))
        for t in tags:
            if not isinstance(t, str):
                raise TypeError("%s: tags must be strings, got %r in tags" % (where, t))
        self.tags = sorted(tags) if isinstance(tags, (set, frozenset)) else list(tags)

        self.cache_key = None
        if cache_key_fn is not None:
            from ordo.tasks import task_input_hash

            if cache_key_fn is task_input_hash:
                self.cache_key = "inputs"
            elif isinstance(cache_key_fn, str):
                if not cache_key_fn.strip():
                    raise ValueError("%s: cache_key_fn must not be an empty template" % where)
                self.cache_key = cache_key_fn
            else:
                raise TypeError(
                    "%s: cache_key_fn=%r: Ordo's server computes a task's cache key before the task "
                    "starts, so it cannot call a Python function; use cache_key_fn=task_input_hash "
                    "(from ordo.tasks) to cache by inputs, or a key template string such as "
                    "\"{{parameters.table}}\"" % (where, getattr(cache_key_fn, "__name__", cache_key_fn))
                )
        self.cache_expiration_seconds = None
        if cache_expiration is not None:
            self.cache_expiration_seconds = _seconds(where, "cache_expiration", cache_expiration, False)
            if self.cache_key is None:
                self.cache_key = "inputs"

        self.work_queue = None
        if work_queue is not None:
            self.work_queue = _check_name(where, "work_queue", work_queue)

        self.env = {}
        if env is not None:
            if not isinstance(env, dict):
                raise TypeError("%s: env must be a dict of strings, got %s" % (where, _values.type_name(env)))
            for k, v in env.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError("%s: env must map strings to strings, got %r: %r" % (where, k, v))
                _check_env_name(where, "env", k)
            self.env = dict(env)
        self.inherit_env = []
        if inherit_env is not None:
            if isinstance(inherit_env, str) or not isinstance(inherit_env, (list, tuple)):
                raise TypeError("%s: inherit_env must be a list of variable names, got %r" % (where, inherit_env))
            for k in inherit_env:
                _check_env_name(where, "inherit_env", k)
            self.inherit_env = list(inherit_env)

    def with_options(self, **options):
        """A copy of this task with some decorator arguments changed (the same arguments as @task).

        On Ordo the worker finds a task by its module-level name, and a copy shares the original's
        function, so the copy needs no name of its own in the module."""
        return super().with_options(**options)

    def spec_options(self):
        """The task's options as fields of a deployment document's task."""
        spec = {}
        if self.retries:
            spec["retries"] = self.retries
            if self.retry_delay_seconds:
                spec["retry_delay_seconds"] = self.retry_delay_seconds
        if self.timeout_seconds is not None:
            spec["timeout_seconds"] = self.timeout_seconds
        if self.tags:
            spec["tags"] = list(self.tags)
        if self.cache_key is not None:
            spec["cache"] = {"key": self.cache_key}
            if self.cache_expiration_seconds is not None:
                spec["cache"]["expiration_seconds"] = self.cache_expiration_seconds
        if self.work_queue is not None:
            spec["work_queue"] = self.work_queue
        if self.env:
            spec["env"] = dict(self.env)
        if self.inherit_env:
            spec["inherit_env"] = list(self.inherit_env)
        return spec

    def retry_delay(self, retry):
        """Seconds before retry number retry (0 for the first); a list's last delay repeats."""
        d = self.retry_delay_seconds
        if isinstance(d, list):
            return d[min(retry, len(d) - 1)] if d else 0
        return d

    def __call__(self, *args, **kwargs):
        wait_for = kwargs.pop("wait_for", None)
        cur = _state.current
        if cur.trace is not None and _state.running_task() is None:
            return cur.trace.task_call(self, args, kwargs, wait_for)
        if Submitted.made:
            args, kwargs = _results(args), _results(kwargs)
        if _state.running_task() is not None:
            return self.fn(*args, **kwargs)
        return self._run_local(args, kwargs)

    def submit(self, *args, **kwargs):
        """Call the task and get a future, as Prefect's task.submit: `fut.result()` is the value.

        On Ordo the tasks of a flow run concurrently as their inputs allow, whichever way they are
        called, so traced this is the same as a call (a future, whose .result() is itself). Run
        locally the task runs at once; passing the future to another task passes its value."""
        cur = _state.current
        if cur.trace is not None and _state.running_task() is None:
            return self(*args, **kwargs)
        return Submitted(self(*args, **kwargs))

    def _run_local(self, args, kwargs):
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError("task %r: %s" % (self.name, e)) from None
        encoded = {}
        for k, v in bound.arguments.items():
            try:
                encoded[k] = _values.encode(v)
            except _values.ValueTravelError as e:
                raise _values.ValueTravelError("task %r argument %r: %s" % (self.name, k, e)) from None
        cur = _state.current
        for attempt in range(self.retries + 1):
            bound.arguments.update({k: _decode(e) for k, e in encoded.items()})
            run = _state.TaskRun(self.name)
            cur.task = run
            try:
                result = self.fn(*bound.args, **bound.kwargs)
            except Exception as e:
                if attempt >= self.retries:
                    raise
                delay = self.retry_delay(attempt)
                _values.get_run_logger().warning(
                    "task %r failed (attempt %d of %d): %s: %s; retrying in %s s",
                    self.name, attempt + 1, self.retries + 1, type(e).__name__, e, delay,
                )
                if delay:
                    time.sleep(delay)
            else:
                break
            finally:
                cur.task = None
        if isinstance(result, _values.Metrics):
            run.metrics.update(result)
        if run.metrics:
            _values.get_run_logger().info("task %r metrics %s", self.name, _values.dumps(run.metrics))
        try:
            return _values.roundtrip(result)
        except _values.ValueTravelError as e:
            raise _values.ValueTravelError("task %r returned a value that cannot travel: %s" % (self.name, e)) from None


class Submitted:
    """The result of task.submit() outside a traced flow: the task has already run."""

    made = False  # arguments are searched for these only once there are some

    def __init__(self, value):
        self._value = value
        Submitted.made = True

    def result(self, raise_on_failure=True):
        return self._value

    def wait(self, timeout=None):
        return None

    def __repr__(self):
        return "<ordo submitted result %s>" % _values.short_repr(self._value, 80)


def _results(value):
    """value with each Submitted in it (at any depth of lists, tuples and dicts) replaced by its
    result; the same object when there is none."""
    if isinstance(value, Submitted):
        return value._value
    if type(value) in (list, tuple):
        items = [_results(v) for v in value]
        if any(a is not b for a, b in zip(items, value)):
            return type(value)(items)
    elif type(value) is dict:
        items = {k: _results(v) for k, v in value.items()}
        if any(items[k] is not v for k, v in value.items()):
            return items
    return value


def _decode(encoded):
    import json

    import io

    text, _, data = encoded
    return _values.decode(json.loads(text), lambda name: io.BytesIO(data))


class Flow(_Decorated):
    """A function decorated with @flow. `.fn` is the plain function.

    Called outside Ordo it runs its body in this process (its task calls run one after another);
    `ordo deploy` traces it instead; called from a flow being traced it is a sub-flow.
    """

    _KIND = "flow"
    _OPTIONS = ("name", "description", "log_prints")

    def __init__(self, fn, name=None, description=None, log_prints=None):
        import inspect

        where = self._wrap(fn, dict(name=name, description=description, log_prints=log_prints))
        if description is not None and not isinstance(description, str):
            raise TypeError("%s: description must be a string, got %r" % (where, description))
        self.description = description if description is not None else (inspect.getdoc(fn) or "")

    def __call__(self, *args, **kwargs):
        wait_for = None
        if "wait_for" in kwargs and "wait_for" not in self.signature.parameters:
            wait_for = kwargs.pop("wait_for")
        cur = _state.current
        if cur.trace is not None and cur.task is None:
            return cur.trace.flow_call(self, args, kwargs, wait_for)
        return self.fn(*args, **kwargs)


def task(fn=None, /, **options):
    """Make a function a task of a flow: `@task` or `@task(retries=3, retry_delay_seconds=5)`.

    Arguments (Prefect 2's names and meanings):
      name                 the task's name in the flow (default: the function's name). A second
                           call of the same task in one flow is named NAME-2, then NAME-3, ...
      retries              how many times a failed attempt is retried (default 0)
      retry_delay_seconds  seconds before each retry: a number, or a list (one delay per retry,
                           the last one repeating); a timedelta is accepted too
      timeout_seconds      an attempt running longer fails (on Ordo; not enforced locally)
      tags                 a list of strings
      cache_key_fn         ordo.tasks.task_input_hash: reuse the result of an earlier run with the
                           same inputs (the task's definition, its arguments and its upstream
                           results and outputs); or a key template such as
                           "{{parameters.table}}" passed to Ordo as is. Ordo's server computes
                           the key before the task starts, so other functions are refused.
      cache_expiration     how long a cached result may be reused (seconds or a timedelta);
                           given alone it also means caching by inputs
      work_queue           run this task on another work queue than its flow's
      log_prints           accepted for compatibility: print always goes to the task's log
      env                  (Ordo) variables set for the task's process, stored in the deployment:
                           no secrets here
      inherit_env          (Ordo) names of the worker's variables passed to the task (a database
                           URL, a password): a task gets only these and its ORDO_* variables, and
                           their values are never stored

    Bad values raise TypeError or ValueError here, naming the argument. Locally, caching is not
    applied (every call runs).
    """
    return _decorator(Task, fn, options)


def flow(fn=None, /, **options):
    """Make a function a flow: `@flow` or `@flow(name="ml-pipeline", description="...")`.

    name         the flow's name (default: the function's name); also the default deployment name
    description  the deployment's description (default: the function's docstring)

    The flow's parameters are the function's: their defaults are the deployment's parameters
    (they must be JSON) and their type hints its parameters' JSON Schema. Called outside Ordo
    the body simply runs; `ordo deploy FILE.py:FUNCTION` traces it into a deployment, where the
    body runs with placeholders and task calls return futures (see ordo._trace).
    """
    return _decorator(Flow, fn, options)
