"""Ordo's Python package: write a flow as decorated functions, run it locally, deploy it to Ordo.

    from ordo import flow, task, get_run_logger

    @task(retries=3, retry_delay_seconds=5)
    def load(table: str) -> list: ...

    @flow
    def pipeline(table: str = "houses"):
        rows = load(table)
        ...

The decorators take Prefect 2's arguments with the same meanings (see ordo.task and ordo.flow);
`from prefect.tasks import task_input_hash` becomes `from ordo.tasks import task_input_hash`.

A call of a task does one of three things:
- in a flow traced by `ordo deploy flow.py:pipeline` (python -m ordo trace), it returns a future
  and becomes a task of the deployment, whose command is `python3 -m ordo run flow.py load
  --args ...` (ordo._trace says what is traced and what is an error);
- in a flow called outside Ordo (`pipeline()`), it runs at once in this process, with its
  retries and retry delays, and its arguments and return value pass through the serialisation
  they would on Ordo (ordo._values); timeouts and caching apply only on Ordo;
- inside another task (locally or on a worker), it is the plain function, `.fn`.

In a task: print and get_run_logger() write the task's log; output_dir() is where files kept as
the task's outputs go; log_metrics(...) or returning Metrics(...) records metrics. Values travel
between tasks as JSON when they are JSON, else pickled into the task's outputs (ordo._values).
"""

from ordo._version import __version__
from ordo._core import Flow, Task, flow, task
from ordo._state import TraceError
from ordo._values import Metrics, get_run_logger, log_metrics, output_dir

__all__ = [
    "Flow",
    "Metrics",
    "Task",
    "TraceError",
    "__version__",
    "flow",
    "get_run_logger",
    "log_metrics",
    "output_dir",
    "task",
]
