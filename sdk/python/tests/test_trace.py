"""Tracing flows into deployment documents: edges, items, unpacking, wait_for, sub-flows, names,
sources, schema, and the errors that name the user's line."""

import json
import sys
import unittest
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import support  # noqa: F401  (puts the package on sys.path)

import ordo
from ordo import TraceError, _trace, flow, task
from ordo.tasks import task_input_hash

THIS = sys.modules[__name__]


def line_of(marker):
    with open(__file__, encoding="utf-8") as f:
        for i, text in enumerate(f, 1):
            if marker in text and "line_of(" not in text:
                return i
    raise AssertionError("no line with %r" % marker)


def trace(fl, name=None):
    return _trace.trace(THIS, __file__, fl, name)["deployments"]


def args_of(spec):
    cmd = spec["command"]
    return json.loads(cmd[cmd.index("--args") + 1])


@task
def load(table: str, limit: int = 10) -> list:
    return []


@task
def pair(rows) -> Tuple[list, Dict[str, int]]:
    return [], {}


@task
def anything(*args, **kwargs):
    return None


@task(name="train-model", retries=3, retry_delay_seconds=5, timeout_seconds=600, tags=["ml"],
      cache_key_fn=task_input_hash, cache_expiration=3600, work_queue="gpu")
def train(x, y=None):
    return None


train_fast = train.with_options(retries=1)


@flow
def edges(table: str = "houses"):
    rows = load(table)  # marker: edges-load
    a, b = pair(rows)
    anything(a, b["k"], rows[0], [rows, {"x": (a, 1)}], k=table)  # marker: edges-anything


@flow(name="child-flow")
def child(size: int = 1, label: str = "x"):
    load("c")


@flow
def parent():
    first = load("a")
    c = child(size=2, wait_for=[first])
    anything(wait_for=[c, [first]])
    child(3)


@flow
def twice():
    load("a")
    load("b")
    load("c", limit=5)
    train(1)
    train_fast(2)


@flow
def typed(
    a: int,
    b: float = 1.5,
    c: str = "s",
    d: bool = True,
    e: List[int] = [1],
    f: Dict[str, float] = {},
    g: Optional[int] = None,
    h: Literal["x", "y"] = "x",
    i: Tuple[int, str] = (1, "a"),
    j: tuple = (),
    k=None,
    m: Union[int, str] = 0,
    n: Any = 0,
    o: int = None,
):
    pass


@flow(description="explicit")
def with_kwargs(a: int = 1, **rest):
    """Docstring."""


@flow
def documented():
    """The docstring is the description."""


class TraceGraphTest(unittest.TestCase):
    def test_edges_items_and_bindings(self):
        (dep,) = trace(edges)
        doc = dep["document"]
        self.assertEqual(doc["name"], "edges")
        tasks = doc["flow"]["tasks"]
        self.assertEqual([t["name"] for t in tasks], ["load", "pair", "anything"])
        self.assertEqual(tasks[0]["command"][:6], ["python3", "-m", "ordo", "run", __file__, "load"])
        self.assertEqual(args_of(tasks[0]), {"table": {"param": "table"}})
        self.assertNotIn("depends_on", tasks[0])
        self.assertEqual(args_of(tasks[1]), {"rows": {"task": "load"}})
        self.assertEqual(tasks[1]["depends_on"], ["load"])
        self.assertEqual(
            args_of(tasks[2]),
            {
                "args": {"tuple": [
                    {"task": "pair", "item": [0]},
                    {"task": "pair", "item": [1, "k"]},
                    {"task": "load", "item": [0]},
                    {"list": [{"task": "load"}, {"dict": {"x": {"tuple": [{"task": "pair", "item": [0]}, {"value": 1}]}}}]},
                ]},
                "kwargs": {"dict": {"k": {"param": "table"}}},
            },
        )
        self.assertEqual(tasks[2]["depends_on"], ["pair", "load"])
        # --args is compact with sorted keys
        cmd = tasks[2]["command"]
        self.assertEqual(cmd[-1], json.dumps(json.loads(cmd[-1]), sort_keys=True, separators=(",", ":")))

    def test_constants_and_defaults(self):
        @flow
        def consts():
            load("t", limit=3)
            load("u")
            anything((1, 2), {"a": [1, (2,)]}, None, 1.5)

        (dep,) = trace(consts)
        t = dep["document"]["flow"]["tasks"]
        self.assertEqual(args_of(t[0]), {"table": {"value": "t"}, "limit": {"value": 3}})
        self.assertEqual(args_of(t[1]), {"table": {"value": "u"}})  # defaults are not bound
        self.assertEqual(
            args_of(t[2])["args"],
            {"tuple": [
                {"tuple": [{"value": 1}, {"value": 2}]},
                {"dict": {"a": {"list": [{"value": 1}, {"tuple": [{"value": 2}]}]}}},
                {"value": None},
                {"value": 1.5},
            ]},
        )

    def test_names_of_repeated_calls_and_options(self):
        (dep,) = trace(twice)
        tasks = dep["document"]["flow"]["tasks"]
        self.assertEqual([t["name"] for t in tasks], ["load", "load-2", "load-3", "train-model", "train-model-2"])
        self.assertEqual(tasks[1]["command"][5], "load")
        t = tasks[3]
        self.assertEqual(t["command"][5], "train")
        self.assertEqual(t["retries"], 3)
        self.assertEqual(t["retry_delay_seconds"], 5)
        self.assertEqual(t["timeout_seconds"], 600)
        self.assertEqual(t["tags"], ["ml"])
        self.assertEqual(t["cache"], {"key": "inputs", "expiration_seconds": 3600})
        self.assertEqual(t["work_queue"], "gpu")
        # a with_options copy is found by its module-level name, or by the function it shares
        self.assertIn(tasks[4]["command"][5], ("train_fast", "train"))
        self.assertEqual(tasks[4]["retries"], 1)
        self.assertNotIn("retries", tasks[0])

    def test_wait_for_and_sub_flows(self):
        deps = trace(parent, "prod")
        self.assertEqual([d["document"]["name"] for d in deps], ["prod.child-flow", "prod"])
        child_doc = deps[0]["document"]
        self.assertEqual(child_doc["flow"]["name"], "child-flow")
        self.assertEqual(child_doc["parameters"], {"size": 1, "label": "x"})
        tasks = deps[1]["document"]["flow"]["tasks"]
        self.assertEqual([t["name"] for t in tasks], ["load", "child-flow", "anything", "child-flow-2"])
        self.assertEqual(tasks[1], {"name": "child-flow", "deployment": "prod.child-flow", "parameters": {"size": 2}, "depends_on": ["load"]})
        self.assertEqual(tasks[2]["depends_on"], ["child-flow", "load"])
        self.assertEqual(args_of(tasks[2]), {})
        self.assertEqual(tasks[3]["parameters"], {"size": 3})

    def test_sub_flow_takes_constants_only(self):
        @flow
        def bad_sub(n: int = 1):
            child(size=n)  # marker: bad-sub

        with self.assertRaises(TraceError) as cm:
            trace(bad_sub)
        self.assertIn("test_trace.py:%d" % line_of("marker: bad-sub"), str(cm.exception))
        self.assertIn("constants", str(cm.exception))

    def test_sources(self):
        (dep,) = trace(edges)
        src = dep["sources"]
        def_line = line_of("def edges(")
        self.assertEqual(src[""], "%s:%d" % (__file__, def_line))
        self.assertEqual(src["parameters"], src[""])
        self.assertEqual(src["flow.tasks[0]"], "%s:%d" % (__file__, line_of("marker: edges-load")))
        self.assertEqual(src["flow.tasks[2]"], "%s:%d" % (__file__, line_of("marker: edges-anything")))

    def test_schema(self):
        (dep,) = trace(typed)
        doc = dep["document"]
        self.assertEqual(doc["parameters"], {"b": 1.5, "c": "s", "d": True, "e": [1], "f": {}, "g": None,
                                             "h": "x", "i": [1, "a"], "j": [], "k": None, "m": 0, "n": 0,
                                             "o": None})
        s = doc["parameters_schema"]
        self.assertEqual(s["type"], "object")
        self.assertEqual(s["required"], ["a"])
        self.assertIs(s["additionalProperties"], False)
        p = s["properties"]
        self.assertEqual(p["a"], {"type": "integer"})
        self.assertEqual(p["b"], {"type": "number", "default": 1.5})
        self.assertEqual(p["c"]["type"], "string")
        self.assertEqual(p["d"]["type"], "boolean")
        self.assertEqual(p["e"]["items"], {"type": "integer"})
        self.assertEqual(p["f"]["type"], "object")
        self.assertEqual(p["f"]["additionalProperties"], {"type": "number"})
        self.assertEqual(p["g"]["anyOf"], [{"type": "integer"}, {"type": "null"}])
        self.assertEqual(p["h"]["enum"], ["x", "y"])
        self.assertEqual(p["i"]["type"], "array")
        self.assertEqual(p["i"]["prefixItems"], [{"type": "integer"}, {"type": "string"}])
        self.assertEqual(p["j"]["type"], "array")
        self.assertEqual(p["k"], {"default": None})
        self.assertEqual(p["m"]["anyOf"], [{"type": "integer"}, {"type": "string"}])
        self.assertEqual(p["n"], {"default": 0})
        self.assertEqual(p["o"], {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None})

    def test_kwargs_flow_allows_more_properties_and_description(self):
        (dep,) = trace(with_kwargs)
        doc = dep["document"]
        self.assertNotIn("additionalProperties", doc["parameters_schema"])
        self.assertEqual(doc["description"], "explicit")
        (dep,) = trace(documented)
        self.assertEqual(dep["document"]["description"], "The docstring is the description.")

    def test_submit_is_a_call(self):
        @flow
        def submits():
            rows = load.submit("t")
            anything(rows.result(), wait_for=[load.submit("u")])

        (dep,) = trace(submits)
        tasks = dep["document"]["flow"]["tasks"]
        self.assertEqual([t["name"] for t in tasks], ["load", "load-2", "anything"])
        self.assertEqual(args_of(tasks[2]), {"args": {"tuple": [{"task": "load"}]}})
        self.assertEqual(tasks[2]["depends_on"], ["load", "load-2"])

    def test_flow_return_value_is_ignored(self):
        @flow
        def returns():
            return load("x")

        (dep,) = trace(returns)
        self.assertEqual(len(dep["document"]["flow"]["tasks"]), 1)


class TraceErrorTest(unittest.TestCase):
    """Each use of a future or a parameter as a value names this file's line."""

    def assertTraceError(self, body, marker, *words):
        fl = flow(name="f")(body)
        with self.assertRaises(TraceError) as cm:
            trace(fl)
        msg = str(cm.exception)
        self.assertIn("test_trace.py:%d:" % line_of(marker), msg)
        for w in words:
            self.assertIn(w, msg)
        return msg

    def test_bool(self):
        def body():
            if load("a"):  # marker: err-if
                pass

        msg = self.assertTraceError(body, "marker: err-if", "the result of task 'load'", "move this logic into a task")
        self.assertIn("exists only when the flow runs", msg)

    def test_bool_of_parameter(self):
        def body(p: int = 1):
            return bool(p)  # marker: err-param-bool

        self.assertTraceError(body, "marker: err-param-bool", "flow parameter 'p'", "move this logic into a task")

    def test_for(self):
        def body():
            for _ in load("a"):  # marker: err-for
                pass

        self.assertTraceError(body, "marker: err-for", "annotate")

    def test_len(self):
        def body():
            len(load("a"))  # marker: err-len

        self.assertTraceError(body, "marker: err-len", "len()")

    def test_comparisons(self):
        def body():
            load("a") == 1  # marker: err-eq

        self.assertTraceError(body, "marker: err-eq", "compared")

        def body2(p: int = 1):
            p < 3  # marker: err-lt

        self.assertTraceError(body2, "marker: err-lt", "compared (<)")

    def test_arithmetic(self):
        def body():
            load("a") + 1  # marker: err-add

        self.assertTraceError(body, "marker: err-add", "arithmetic (+)")

        def body2(p: int = 1):
            2 * p  # marker: err-rmul

        self.assertTraceError(body2, "marker: err-rmul", "arithmetic (*)")

    def test_conversions(self):
        def body_int():
            int(load("a"))  # marker: err-int

        self.assertTraceError(body_int, "marker: err-int", "int()")

        def body_float(p: float = 1):
            float(p)  # marker: err-float

        self.assertTraceError(body_float, "marker: err-float", "float()")

        def body_str():
            str(load("a"))  # marker: err-str

        self.assertTraceError(body_str, "marker: err-str", "str()")

        def body_format(p: str = "x"):
            "%s" % "a", f"{p}"  # marker: err-format

        self.assertTraceError(body_format, "marker: err-format", "formatted")

    def test_in_and_hash(self):
        def body():
            1 in load("a")  # marker: err-contains

        self.assertTraceError(body, "marker: err-contains", "`in`")

        def body2():
            {load("a"): 1}  # marker: err-hash

        self.assertTraceError(body2, "marker: err-hash", "hashed")

    def test_attribute(self):
        def body():
            load("a").shape  # marker: err-attr

        self.assertTraceError(body, "marker: err-attr", ".shape")

    def test_error_inside_the_standard_library_names_the_callers_line(self):
        import copy

        def body():
            copy.copy(load("a"))  # marker: err-lib

        self.assertTraceError(body, "marker: err-lib", "pickled")

    def test_unpacking_without_annotation(self):
        def body():
            x, y = load("a")  # marker: err-unpack

        self.assertTraceError(body, "marker: err-unpack", "tuple[X, Y]", "result[0]")

    def test_unpacking_wrong_length(self):
        def body():
            x, y, z = pair("a")  # marker: err-unpack3

        fl = flow(name="f")(body)
        with self.assertRaises(ValueError):
            trace(fl)

    def test_index_with_non_constant(self):
        def body():
            load("a")[1:2]  # marker: err-slice

        self.assertTraceError(body, "marker: err-slice", "constant int or str")

    def test_non_json_constant(self):
        def body():
            load(object())  # marker: err-const

        self.assertTraceError(body, "marker: err-const", "argument 'table'", "not a JSON constant")

        def body2():
            load("a", limit=float("nan"))  # marker: err-nan

        self.assertTraceError(body2, "marker: err-nan", "argument 'limit'")

    def test_bad_call(self):
        def body():
            load("a", nope=1)  # marker: err-call

        self.assertTraceError(body, "marker: err-call", "calling task 'load'")

    def test_wait_for_needs_futures(self):
        def body():
            load("a", wait_for=[1])  # marker: err-wait

        self.assertTraceError(body, "marker: err-wait", "wait_for")

    def test_task_not_at_module_level(self):
        @task
        def local_task():
            pass

        def body():
            local_task()  # marker: err-local

        self.assertTraceError(body, "marker: err-local", "module-level")

    def test_non_json_parameter_default(self):
        def body(p=object()):
            pass

        fl = flow(name="f")(body)
        with self.assertRaises(TraceError) as cm:
            trace(fl)
        self.assertIn("parameter 'p'", str(cm.exception))

    def test_placeholders_repr_does_not_raise(self):
        def body(p: int = 1):
            self.assertIn("flow parameter 'p'", repr(p))
            self.assertIn("task 'load'", repr(load("a")))

        fl = flow(name="f")(body)
        trace(fl)


class TraceCommandTest(unittest.TestCase):
    def test_trace_prints_json(self):
        r = support.run_ordo(["trace", "pipeline.py", "pipeline", "--name", "ml"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        (dep,) = out["deployments"]
        doc = dep["document"]
        self.assertEqual(doc["name"], "ml")
        self.assertEqual(doc["description"], "Loads, splits, trains and evaluates.")
        self.assertEqual([t["name"] for t in doc["flow"]["tasks"]], ["load", "split", "train", "evaluate"])
        self.assertEqual(doc["flow"]["tasks"][0]["command"][4], "pipeline.py")
        self.assertEqual(dep["sources"]["flow.tasks[0]"], "pipeline.py:%d" % _line_in("flows/pipeline.py", "rows = load(table)"))

    def test_trace_error_exit_2(self):
        r = support.run_ordo(["trace", "pipeline.py", "broken"])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        self.assertIn("pipeline.py:%d" % _line_in("flows/pipeline.py", "if rows:"), r.stderr)

    def test_trace_usage_errors(self):
        import contextlib
        import io
        import os

        cwd = os.getcwd()
        os.chdir(support.FLOWS)
        try:
            for args in ([], ["missing.py", "f"], ["pipeline.py", "load"], ["pipeline.py", "nope"], ["a", "b", "--x"]):
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    self.assertEqual(_trace.main(args), 2, args)
                self.assertTrue(err.getvalue().strip(), args)
        finally:
            os.chdir(cwd)


def _line_in(rel, text):
    import os

    with open(os.path.join(support.SDK, "tests", rel), encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if text in line:
                return i
    raise AssertionError(text)


if __name__ == "__main__":
    unittest.main()
