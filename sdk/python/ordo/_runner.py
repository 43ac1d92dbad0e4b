"""Runs one task attempt inside a worker: `python -m ordo run FILE FUNCTION [--args JSON]`.

The warm interpreter (ordo._warm) imports FILE once with load_flow_module and calls main in a
forked child for each attempt, so both functions must stay usable that way.
"""

import importlib.util
import json
import os
import sys

_modules = {}


def load_flow_module(path):
    """Import the flow file at path (once per process), with its directory on sys.path."""
    path = os.path.abspath(path)
    mod = _modules.get(path)
    if mod is not None:
        return mod
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = "ordo_flow_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _modules[path] = mod
    return mod


def main(argv):
    """Run the task FUNCTION of FILE; return the process's exit status."""
    if len(argv) < 2:
        print("usage: python -m ordo run FILE FUNCTION [--args JSON]", file=sys.stderr)
        return 2
    path, func = argv[0], argv[1]
    mod = load_flow_module(path)
    fn = getattr(mod, func)
    fn = getattr(fn, "fn", fn)
    result = fn()
    result_path = os.environ.get("ORDO_RESULT_PATH")
    if result_path:
        with open(result_path, "w") as f:
            json.dump(result, f)
    return 0
