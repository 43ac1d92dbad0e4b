"""Shared helpers of the example pipeline's tasks: Ordo's task contract.

Each task gets its inputs from environment variables that the Ordo worker
sets (ORDO_PARAMETERS, ORDO_INPUTS, ORDO_WORKSPACE, ...) and writes its
result as JSON to ORDO_RESULT_PATH. Large data goes through files in the
run's workspace; results stay small.
"""
import json
import os
import sys


def parameters():
    return json.loads(os.environ.get("ORDO_PARAMETERS") or "{}")


def inputs():
    return json.loads(os.environ.get("ORDO_INPUTS") or "{}")


def workspace(name):
    """Path of a file in the run's workspace on this worker."""
    return os.path.join(os.environ.get("ORDO_WORKSPACE", "."), name)


def result(value):
    """Record the task run's result (JSON, at most 1 MiB)."""
    path = os.environ.get("ORDO_RESULT_PATH")
    if path:
        with open(path, "w") as f:
            json.dump(value, f)
    print("result:", json.dumps(value))


def log(*args):
    # stdout is line-buffered only on a terminal: flush so lines stream live
    print(*args, flush=True)


def fail(message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)
