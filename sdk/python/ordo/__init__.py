"""Ordo's Python package: write a flow as decorated functions, run it locally, deploy it to Ordo.

    from ordo import flow, task, get_run_logger

The decorators take Prefect 2's arguments with the same meanings; see docs/PYTHON.md.
"""

from ordo._version import __version__

__all__ = ["__version__"]
