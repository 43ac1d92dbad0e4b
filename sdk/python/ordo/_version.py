"""The version of Ordo's Python package, which is also the version of the ordo binary built
from the same tree (the binary reads this file)."""

__version__ = "0.12.0"
