"""The runner end to end: `python -m ordo run` in a subprocess with a fake ORDO_* environment."""

import json
import os
import shutil
import sys
import tempfile
import unittest

import support

from ordo import _runner

PIPELINE = os.path.join(support.FLOWS, "pipeline.py")


class Attempt:
    """The files and variables a worker gives one attempt."""

    def __init__(self, test, parameters=None, inputs=None):
        self.dir = tempfile.mkdtemp(prefix="ordo-runner-test-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.out = os.path.join(self.dir, "out")
        self.inp = os.path.join(self.dir, "in")
        os.makedirs(self.out)
        os.makedirs(self.inp)
        self.result = os.path.join(self.dir, "result.json")
        self.metrics = os.path.join(self.dir, "metrics.json")
        self.env = {
            "ORDO_RUN_ID": "r1",
            "ORDO_TASK_NAME": "t",
            "ORDO_PARAMETERS": json.dumps(parameters or {}),
            "ORDO_INPUTS": json.dumps(inputs or {}),
            "ORDO_RESULT_PATH": self.result,
            "ORDO_METRICS_PATH": self.metrics,
            "ORDO_OUTPUT_DIR": self.out,
            "ORDO_INPUT_DIR": self.inp,
        }

    def give(self, task, previous):
        """Deliver a previous attempt's result and outputs as task's input."""
        inputs = json.loads(self.env["ORDO_INPUTS"])
        inputs[task] = previous.read_result()
        self.env["ORDO_INPUTS"] = json.dumps(inputs)
        shutil.copytree(previous.out, os.path.join(self.inp, task))

    def run(self, function, args=None, file="pipeline.py"):
        argv = ["run", file, function]
        if args is not None:
            argv += ["--args", json.dumps(args)]
        return support.run_ordo(argv, env=self.env)

    def read_result(self):
        with open(self.result, encoding="utf-8") as f:
            return json.load(f)

    def read_metrics(self):
        with open(self.metrics, encoding="utf-8") as f:
            return json.load(f)


class RunnerTest(unittest.TestCase):
    def test_pipeline_passes_values_between_attempts(self):
        load = Attempt(self, parameters={"table": "houses"})
        r = load.run("load", {"table": {"param": "table"}})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("loading houses", r.stdout)
        self.assertEqual(load.read_result(), [0, 1, 2, 3])
        self.assertFalse(os.path.exists(load.metrics))

        split = Attempt(self)
        split.give("load", load)
        r = split.run("split", {"rows": {"task": "load"}})
        self.assertEqual(r.returncode, 0, r.stderr)
        desc = split.read_result()["__ordo_value__"]
        self.assertEqual((desc["output"], desc["format"], desc["type"]), ("_return.pkl", "pickle", "tuple"))
        self.assertEqual(desc["repr"], "([0, 1], [2, 3])")
        self.assertTrue(os.path.isfile(os.path.join(split.out, "_return.pkl")))

        train = Attempt(self, parameters={"lr": 0.5})
        train.give("split", split)
        r = train.run("train", {
            "train_rows": {"task": "split", "item": [0]},
            "test_rows": {"task": "split", "item": [1]},
            "extra": {"tuple": [{"value": 1}, {"list": [{"task": "split", "item": [1, 0]}]}]},
            "options": {"dict": {"lr": {"param": "lr"}}},
        })
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("INFO training on 2 rows", r.stdout)
        self.assertIn("WARNING a warning", r.stderr)
        self.assertEqual(train.read_metrics(), {"rows": 2, "loss": 0.5})
        with open(os.path.join(train.out, "model.txt")) as f:
            self.assertEqual(f.read(), "weights")
        desc = train.read_result()["__ordo_value__"]
        self.assertEqual(desc["type"], "ordo_flow_pipeline.Model")
        self.assertEqual(desc["repr"], "Model([1, [1, [2]], {'lr': 0.5}])")

        evaluate = Attempt(self, parameters={"scale": 2})
        evaluate.give("train", train)
        r = evaluate.run("evaluate", {"model": {"task": "train"}, "scale": {"param": "scale"}})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(evaluate.read_result(), {"r2": 1.0, "rmse": 2})
        self.assertEqual(evaluate.read_metrics(), {"r2": 1.0, "rmse": 2})

    def test_large_json_result_is_an_output(self):
        a = Attempt(self)
        code, _, err = in_process(_runner.main, [PIPELINE, "big", "--args", '{"n":{"value":1100}}'], a.env)
        self.assertEqual(code, 0, err)
        desc = a.read_result()["__ordo_value__"]
        self.assertEqual((desc["output"], desc["format"]), ("_return.json", "json"))
        with open(os.path.join(a.out, "_return.json")) as f:
            self.assertEqual(len(json.load(f)), 1100)

    def test_failure_prints_traceback_and_exits_1(self):
        a = Attempt(self)
        r = a.run("fail", {"message": {"value": "the model diverged"}})
        self.assertEqual(r.returncode, 1)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(lines[0], "Traceback (most recent call last):")
        self.assertEqual(lines[-1], "ValueError: the model diverged")
        self.assertIn("in helper", r.stderr)
        self.assertNotIn("_runner.py", r.stderr)
        self.assertFalse(os.path.exists(a.result))

    def test_sys_exit(self):
        a = Attempt(self)
        for code in (0, 3):
            argv = [PIPELINE, "exits", "--args", '{"code":{"value":%d}}' % code]
            self.assertEqual(in_process(_runner.main, argv, a.env)[0], code)

    def test_threads_of_a_task_record_metrics(self):
        a = Attempt(self)
        code, _, err = in_process(_runner.main, [PIPELINE, "threaded"], a.env)
        self.assertEqual(code, 0, err)
        self.assertEqual(a.read_metrics(), {"from_thread": 1})
        self.assertIs(a.read_result(), True)

    def test_unpicklable_result_fails(self):
        a = Attempt(self)
        code, _, err = in_process(_runner.main, [PIPELINE, "unpicklable"], a.env)
        self.assertEqual(code, 1)
        self.assertIn("cannot be pickled", err.strip().splitlines()[-1])

    def test_usage_and_load_errors_exit_2(self):
        a = Attempt(self)
        cases = [
            (["run"], "usage"),
            (["run", "pipeline.py"], "usage"),
            (["run", "missing.py", "load"], "no such file"),
            (["run", "pipeline.py", "nope"], "has no task 'nope'"),
            (["run", "pipeline.py", "load", "--args", "{bad"], "not JSON"),
            (["run", "pipeline.py", "load", "--args", "{\"nope\": {\"value\": 1}}"], "no parameter 'nope'"),
            (["run", "pipeline.py", "load", "--args", "{\"table\": {\"param\": \"missing\"}}"], "ORDO_PARAMETERS"),
            (["run", "pipeline.py", "split", "--args", "{\"rows\": {\"task\": \"load\"}}"], "ORDO_INPUTS"),
            (["run", "pipeline.py", "load", "--args", "{\"table\": {\"what\": 1}}"], "bad argument binding"),
        ]
        for argv, text in cases:
            with self.subTest(argv=argv):
                code, out, err = in_process(_runner.main, argv[1:], a.env, cwd=support.FLOWS)
                self.assertEqual(code, 2, err)
                self.assertIn(text, err)

    def test_import_error_exits_2_with_traceback(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        with open(os.path.join(d, "broken.py"), "w") as f:
            f.write("import ordo\nraise RuntimeError('no database')\n")
        r = support.run_ordo(["run", "broken.py", "x"], cwd=d)
        self.assertEqual(r.returncode, 2)
        self.assertIn("RuntimeError: no database", r.stderr)
        self.assertIn("cannot import broken.py", r.stderr)


def in_process(main, argv, env, cwd=None):
    """main(argv) in this process with env's variables set (and stdout, stderr captured)."""
    import contextlib
    import io

    saved, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


class InProcessTest(unittest.TestCase):
    def test_load_flow_module_once(self):
        m1 = _runner.load_flow_module(PIPELINE)
        m2 = _runner.load_flow_module(os.path.relpath(PIPELINE))
        self.assertIs(m1, m2)
        self.assertIs(sys.modules[m1.__name__], m1)
        self.assertEqual(m1.__name__, "ordo_flow_pipeline")
        self.assertEqual(sys.path[0], support.FLOWS)

    def test_main_returns_and_never_exits(self):
        a = Attempt(self, parameters={"table": "t"})
        code, out, _ = in_process(_runner.main, [PIPELINE, "load", "--args", '{"table":{"param":"table"}}'], a.env)
        self.assertEqual(code, 0)
        self.assertIn("loading t", out)
        self.assertEqual(a.read_result(), [0, 1, 2, 3])
        self.assertEqual(in_process(_runner.main, [PIPELINE, "exits", "--args", '{"code":{"value":4}}'], a.env)[0], 4)
        self.assertEqual(in_process(_runner.main, [PIPELINE], a.env)[0], 2)


if __name__ == "__main__":
    unittest.main()
