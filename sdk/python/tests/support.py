"""Shared by the tests: the package on sys.path, the fixture flows, a subprocess runner."""

import os
import subprocess
import sys

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWS = os.path.join(SDK, "tests", "flows")
if SDK not in sys.path:
    sys.path.insert(0, SDK)


def run_ordo(args, env=None, cwd=None):
    """Run `python -m ordo ARGS` with this interpreter and the package from the tree."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    full["PYTHONPATH"] = SDK
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ordo"] + list(args),
        env=full,
        cwd=cwd or FLOWS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=60,
    )
