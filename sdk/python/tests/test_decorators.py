"""Every decorator argument, its bad values, .fn, .name and with_options."""

import datetime
import unittest

import support  # noqa: F401

import ordo
from ordo import flow, task
from ordo.tasks import task_input_hash


def f(x=1):
    """Doc of f."""
    return x + 1


class TaskDecoratorTest(unittest.TestCase):
    def test_bare_and_called(self):
        for t in (task(f), task()(f)):
            self.assertIs(t.fn, f)
            self.assertEqual(t.name, "f")
            self.assertEqual(t.fn(2), 3)
            self.assertEqual(t.__doc__, "Doc of f.")
            self.assertEqual(t.spec_options(), {})

    def test_options_become_spec_fields(self):
        t = task(
            name="my.task-1", retries=3, retry_delay_seconds=[1, 2.5, datetime.timedelta(seconds=10)],
            timeout_seconds=datetime.timedelta(minutes=10), tags=("a", "b"), cache_key_fn=task_input_hash,
            cache_expiration=datetime.timedelta(hours=1), work_queue="gpu", log_prints=True,
        )(f)
        self.assertEqual(t.name, "my.task-1")
        self.assertEqual(
            t.spec_options(),
            {"retries": 3, "retry_delay_seconds": [1, 2.5, 10], "timeout_seconds": 600, "tags": ["a", "b"],
             "cache": {"key": "inputs", "expiration_seconds": 3600}, "work_queue": "gpu"},
        )

    def test_environment_options(self):
        t = task(env={"MODE": "fast"}, inherit_env=["ML_DATABASE_URL", "PGPASSWORD"])(f)
        self.assertEqual(t.spec_options(), {"env": {"MODE": "fast"}, "inherit_env": ["ML_DATABASE_URL", "PGPASSWORD"]})

    def test_cache_variants(self):
        self.assertEqual(task(cache_key_fn=task_input_hash)(f).spec_options(), {"cache": {"key": "inputs"}})
        self.assertEqual(task(cache_expiration=60)(f).spec_options(), {"cache": {"key": "inputs", "expiration_seconds": 60}})
        self.assertEqual(
            task(cache_key_fn="{{parameters.table}}")(f).spec_options(), {"cache": {"key": "{{parameters.table}}"}}
        )
        with self.assertRaises(TypeError) as cm:
            task(cache_key_fn=lambda ctx, args: "k")(f)
        self.assertIn("cache_key_fn", str(cm.exception))
        self.assertIn("before the task starts", str(cm.exception))
        self.assertIn("task_input_hash", str(cm.exception))

    def test_retry_delay_without_retries_is_not_in_spec(self):
        self.assertEqual(task(retry_delay_seconds=5)(f).spec_options(), {})
        self.assertEqual(task(retries=1, retry_delay_seconds=5)(f).spec_options(), {"retries": 1, "retry_delay_seconds": 5})

    def test_bad_values_name_the_argument(self):
        bad = [
            (dict(retries=-1), ValueError, "retries"),
            (dict(retries=1.5), TypeError, "retries"),
            (dict(retries=True), TypeError, "retries"),
            (dict(retry_delay_seconds="5"), TypeError, "retry_delay_seconds"),
            (dict(retry_delay_seconds=-1), ValueError, "retry_delay_seconds"),
            (dict(retry_delay_seconds=[1, "x"]), TypeError, "retry_delay_seconds[1]"),
            (dict(retry_delay_seconds=float("inf")), TypeError, "retry_delay_seconds"),
            (dict(timeout_seconds=0), ValueError, "timeout_seconds"),
            (dict(timeout_seconds="1"), TypeError, "timeout_seconds"),
            (dict(tags="ml"), TypeError, "tags"),
            (dict(tags=["ml", 1]), TypeError, "tags"),
            (dict(cache_key_fn=""), ValueError, "cache_key_fn"),
            (dict(cache_key_fn=5), TypeError, "cache_key_fn"),
            (dict(cache_expiration=-5), ValueError, "cache_expiration"),
            (dict(cache_expiration="1h"), TypeError, "cache_expiration"),
            (dict(work_queue="bad queue"), ValueError, "work_queue"),
            (dict(work_queue=3), TypeError, "work_queue"),
            (dict(name="has space"), ValueError, "name"),
            (dict(name=""), ValueError, "name"),
            (dict(name=1), TypeError, "name"),
            (dict(log_prints="yes"), TypeError, "log_prints"),
            (dict(env=["A=1"]), TypeError, "env"),
            (dict(env={"A": 1}), TypeError, "env"),
            (dict(env={"ORDO_RUN_ID": "x"}), ValueError, "env"),
            (dict(inherit_env="PGPASSWORD"), TypeError, "inherit_env"),
            (dict(inherit_env=["BAD-NAME"]), ValueError, "inherit_env"),
        ]
        for kwargs, exc, word in bad:
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(exc) as cm:
                    task(**kwargs)(f)
                self.assertIn(word, str(cm.exception))
                self.assertIn("'f'", str(cm.exception))

    def test_unknown_argument_and_misuse(self):
        with self.assertRaises(TypeError) as cm:
            task(retry=3)
        self.assertIn("retry", str(cm.exception))
        with self.assertRaises(TypeError):
            task("name")
        with self.assertRaises(TypeError):
            task(f, retries=2)

        async def coro():
            pass

        with self.assertRaises(TypeError):
            task(coro)

    def test_with_options(self):
        t = task(retries=2, tags=["a"])(f)
        u = t.with_options(retries=5, name="other")
        self.assertIsNot(u, t)
        self.assertIs(u.fn, f)
        self.assertEqual((u.retries, u.name, u.tags), (5, "other", ["a"]))
        self.assertEqual((t.retries, t.name), (2, "f"))
        with self.assertRaises(ValueError):
            t.with_options(retries=-1)
        with self.assertRaises(TypeError):
            t.with_options(nope=1)

    def test_retry_delay_schedule(self):
        t = task(retries=4, retry_delay_seconds=[1, 2])(f)
        self.assertEqual([t.retry_delay(i) for i in range(4)], [1, 2, 2, 2])
        self.assertEqual(task(retries=2, retry_delay_seconds=3)(f).retry_delay(1), 3)
        self.assertEqual(task(retries=2, retry_delay_seconds=[])(f).retry_delay(0), 0)


class FlowDecoratorTest(unittest.TestCase):
    def test_bare_and_called(self):
        for fl in (flow(f), flow()(f)):
            self.assertIs(fl.fn, f)
            self.assertEqual(fl.name, "f")
            self.assertEqual(fl.description, "Doc of f.")
            self.assertEqual(fl(2), 3)

    def test_options(self):
        fl = flow(name="ml-pipeline", description="Trains.")(f)
        self.assertEqual((fl.name, fl.description), ("ml-pipeline", "Trains."))
        g = fl.with_options(name="other")
        self.assertEqual((g.name, g.description, fl.name), ("other", "Trains.", "ml-pipeline"))

    def test_bad_values(self):
        for kwargs, exc, word in [
            (dict(name="a b"), ValueError, "name"),
            (dict(name=3), TypeError, "name"),
            (dict(description=3), TypeError, "description"),
            (dict(retries=3), TypeError, "retries"),
        ]:
            with self.subTest(kwargs=kwargs):
                with self.assertRaises(exc) as cm:
                    flow(**kwargs)(f)
                self.assertIn(word, str(cm.exception))

    def test_exports(self):
        for name in ("flow", "task", "get_run_logger", "Metrics", "log_metrics", "output_dir", "TraceError", "__version__"):
            self.assertTrue(hasattr(ordo, name), name)
        self.assertRegex(ordo.__version__, r"^\d+\.\d+\.\d+")

    def test_task_input_hash_is_callable(self):
        a = task_input_hash(None, {"x": 1})
        self.assertEqual(a, task_input_hash(None, {"x": 1}))
        self.assertNotEqual(a, task_input_hash(None, {"x": 2}))


if __name__ == "__main__":
    unittest.main()
