"""Shared helpers of the example pipeline's tasks: Ordo's task contract.

The Ordo worker runs each task with these environment variables:

- ORDO_PARAMETERS: the run's parameters (a JSON object).
- ORDO_INPUTS: the JSON results of the upstream tasks, by task name.
- ORDO_RESULT_PATH: where the task may write its own JSON result (at most
  1 MiB): small things only, such as row counts and scores.
- ORDO_OUTPUT_DIR: an empty directory. After the task exits 0, every file
  left in it is stored in Ordo's blob store and listed with the task run
  (name, sha256, size): these are the task's outputs.
- ORDO_INPUT_DIR: the outputs of the direct upstream tasks, read-only, at
  ORDO_INPUT_DIR/<upstream task>/<name>, on whatever worker runs the task.
- ORDO_METRICS_PATH: where the task may write metrics, a JSON object of
  name -> number, shown on the run page and charted per deployment.

Files travel between tasks only as outputs and inputs: the next task may
run on another worker, on another host. ORDO_WORKSPACE is scratch space on
one worker, not a channel between tasks.
"""
import json
import os
import sys


def parameters():
    return json.loads(os.environ.get("ORDO_PARAMETERS") or "{}")


def inputs():
    return json.loads(os.environ.get("ORDO_INPUTS") or "{}")


def _contract_dir(variable):
    path = os.environ.get(variable)
    if not path:
        fail(f"{variable} is not set: run this task with an Ordo worker (it passes files through the data plane)")
    return path


def output_path(name):
    """Path to write the output `name` to (in ORDO_OUTPUT_DIR)."""
    return os.path.join(_contract_dir("ORDO_OUTPUT_DIR"), name)


def input_path(task, name):
    """Path of the output `name` of the direct upstream task `task`."""
    path = os.path.join(_contract_dir("ORDO_INPUT_DIR"), task, name)
    if not os.path.exists(path):
        fail(f"input {task}/{name} is missing: is {task} a direct upstream task (depends_on) that writes {name}?")
    return path


def _record(variable, label, value):
    path = os.environ.get(variable)
    if path:
        with open(path, "w") as f:
            json.dump(value, f)
    print(f"{label}:", json.dumps(value), flush=True)


def metrics(values):
    """Record the task run's metrics: a dict of name -> number."""
    _record("ORDO_METRICS_PATH", "metrics", {k: float(v) for k, v in values.items()})


def result(value):
    """Record the task run's result (JSON, at most 1 MiB)."""
    _record("ORDO_RESULT_PATH", "result", value)


def log(*args):
    # stdout is line-buffered only on a terminal: flush so lines stream live
    print(*args, flush=True)


def fail(message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)
