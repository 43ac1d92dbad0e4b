"""The commands of `python -m ordo`, which the ordo binary runs.

    run FILE FUNCTION [--args JSON]   run one task attempt (the worker's task command)
    trace FILE FUNCTION [--name NAME] print the deployments a flow traces to (ordo deploy)
    warm FILE                         a warm interpreter for FILE's tasks (the worker)
"""

import sys


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        from ordo import _runner

        return _runner.main(rest)
    if cmd == "trace":
        from ordo import _trace

        return _trace.main(rest)
    if cmd == "warm":
        from ordo import _warm

        return _warm.main(rest)
    print("python -m ordo: unknown command %r" % cmd, file=sys.stderr)
    return 2
