"""Flows called outside Ordo run in this process, with retries and the same value passing."""

import contextlib
import io
import os
import time
import unittest
from typing import Tuple

import support  # noqa: F401

from ordo import Metrics, flow, get_run_logger, log_metrics, output_dir, task
from ordo._values import ValueTravelError

calls = []


@task(retries=2, retry_delay_seconds=[0.01, 0.02])
def flaky(n):
    calls.append(time.monotonic())
    if len(calls) < 3:
        raise ConnectionError("refused")
    return n


@task(retries=1, retry_delay_seconds=0)
def always_fails():
    calls.append(1)
    raise ValueError("no")


@task
def pair(x) -> Tuple[list, dict]:
    return [x], {"x": x}


@task
def mutate(rows):
    rows.append("changed")
    return rows


@task
def echo(value):
    return value


@task
def write_output(name):
    d = output_dir()
    (d / name).write_text("data")
    log_metrics(size=4)
    return str(d)


@task
def outer(x):
    return inner(x) + 1  # a task called from a task is its plain function


@task
def inner(x):
    return x * 10


@task
def scored():
    log_metrics(a=1)
    return Metrics(b=2.5)


@task
def lambda_maker():
    return lambda: 1


@flow
def sub(x: int = 1):
    return echo(x)


@flow
def main_flow(x: int = 2):
    a, b = pair(x)
    rows = mutate(a)
    return rows, b, sub(x), outer(x)


class LocalRunTest(unittest.TestCase):
    def setUp(self):
        del calls[:]

    def quiet(self):
        out, err = io.StringIO(), io.StringIO()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        self.addCleanup(stack.close)
        return out, err

    def test_retries_with_delays(self):
        out, err = self.quiet()
        self.assertEqual(flaky(7), 7)
        self.assertEqual(len(calls), 3)
        self.assertGreaterEqual(calls[1] - calls[0], 0.01)
        self.assertGreaterEqual(calls[2] - calls[1], 0.02)
        self.assertIn("WARNING task 'flaky' failed (attempt 1 of 3): ConnectionError: refused", err.getvalue())

    def test_last_failure_raises(self):
        self.quiet()
        with self.assertRaises(ValueError):
            always_fails()
        self.assertEqual(len(calls), 2)

    def test_flow_runs_its_body(self):
        self.quiet()
        rows, b, s, o = main_flow(3)
        self.assertEqual(rows, [3, "changed"])
        self.assertEqual(b, {"x": 3})
        self.assertEqual(s, 3)
        self.assertEqual(o, 31)
        self.assertEqual(main_flow.fn(1)[0], [1, "changed"])

    def test_values_are_round_tripped(self):
        self.quiet()
        rows = [1]
        result = mutate(rows)
        self.assertEqual(rows, [1])  # the task got a copy, as it would on Ordo
        self.assertEqual(result, [1, "changed"])
        self.assertEqual(echo((1, 2)), (1, 2))
        self.assertEqual(echo({"a": (1,)}), {"a": (1,)})
        m = echo(Metrics(a=1))
        self.assertIs(type(m), dict)
        with self.assertRaises(ValueTravelError) as cm:
            echo(lambda: 1)
        self.assertIn("argument 'value'", str(cm.exception))
        with self.assertRaises(ValueTravelError) as cm:
            lambda_maker()
        self.assertIn("lambda_maker", str(cm.exception))

    def test_output_dir_and_metrics(self):
        out, _ = self.quiet()
        d1 = write_output("a.txt")
        d2 = write_output("b.txt")
        self.assertNotEqual(d1, d2)
        self.assertTrue(os.path.isfile(os.path.join(d1, "a.txt")))
        self.assertIn("INFO task 'write_output' metrics {\"size\":4}", out.getvalue())
        self.assertEqual(scored(), {"b": 2.5})
        self.assertIn('metrics {"a":1,"b":2.5}', out.getvalue())

    def test_logger(self):
        out, err = self.quiet()
        log = get_run_logger()
        log.info("hello %s", "there")
        log.debug("hidden")
        log.error("bad")
        self.assertEqual(out.getvalue(), "INFO hello there\n")
        self.assertEqual(err.getvalue(), "ERROR bad\n")

    def test_wait_for_is_accepted_locally(self):
        self.quiet()
        self.assertEqual(echo(1, wait_for=[2]), 1)

    def test_submit(self):
        self.quiet()
        fut = pair.submit(4)
        self.assertEqual(fut.result(), ([4], {"x": 4}))
        self.assertIsNone(fut.wait())
        self.assertEqual(echo([fut, {"k": (fut,)}]), [([4], {"x": 4}), {"k": (([4], {"x": 4}),)}])
        self.assertEqual(echo.submit(fut).result(), ([4], {"x": 4}))

    def test_bad_call(self):
        with self.assertRaises(TypeError) as cm:
            echo(1, 2)
        self.assertIn("echo", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
