"""Ordo's Python package: write a flow as decorated functions, run it locally, deploy it to Ordo.

    from ordo import flow, task, get_run_logger

    @task(retries=3, retry_delay_seconds=5)
    def load(table: str) -> list: ...

    @flow
    def pipeline(table: str = "houses"):
        rows = load(table)
        ...

The decorators take Prefect 2's arguments with the same meanings. Calling pipeline() runs it
here; `ordo deploy flow.py:pipeline --name ...` traces it into a deployment whose tasks run
`python -m ordo run flow.py load --args ...` on Ordo's workers (see ordo._trace, ordo._runner and
ordo._values for what is traced and how values travel).
"""

from ordo._version import __version__
from ordo._core import Flow, Task, flow, task
from ordo._trace import TraceError
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
