"""A flow the runner and trace tests use as a file on disk."""

import sys
from typing import Tuple

from ordo import Metrics, flow, get_run_logger, log_metrics, output_dir, task


class Model:
    """A class of the flow file, pickled between tasks."""

    def __init__(self, weights):
        self.weights = weights

    def __repr__(self):
        return "Model(%r)" % (self.weights,)


@task(retries=2, retry_delay_seconds=1)
def load(table: str, limit: int = 4) -> list:
    print("loading", table)
    return list(range(limit))


@task
def split(rows: list) -> Tuple[list, list]:
    half = len(rows) // 2
    return rows[:half], rows[half:]


@task
def train(train_rows, test_rows, *extra, **options):
    get_run_logger().info("training on %d rows", len(train_rows))
    get_run_logger().warning("a warning")
    (output_dir() / "model.txt").write_text("weights")
    log_metrics(rows=len(train_rows), loss=0.5)
    return Model([sum(train_rows), list(extra), options])


@task
def evaluate(model: Model, scale: float = 1.0):
    return Metrics(r2=0.5 * scale, rmse=2)


@task
def big(n: int):
    return ["x" * 1000] * n


@task
def fail(message: str):
    helper(message)


def helper(message):
    raise ValueError(message)


@task
def exits(code):
    sys.exit(code)


@task
def unpicklable():
    return lambda: 1


@flow
def pipeline(table: str = "houses", scale: float = 1.0):
    """Loads, splits, trains and evaluates."""
    rows = load(table)
    a, b = split(rows)
    model = train(a, b, 1, lr=0.1)
    evaluate(model, scale=scale)


@flow
def broken():
    rows = load("t")
    if rows:
        pass


@task
def threaded():
    import threading

    t = threading.Thread(target=lambda: log_metrics(from_thread=1))
    t.start()
    t.join()
    return big.fn(1) == big(1)  # a task called inside a task is its plain function
