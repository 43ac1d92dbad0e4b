"""The commands of `python -m ordo`, which the ordo binary runs.

    run FILE FUNCTION [--args JSON]   run one task attempt (the worker's task command)
    trace FILE FUNCTION [--name NAME] print the deployments a flow traces to (ordo deploy)
    warm FILE                         a warm interpreter for FILE's tasks (the worker)
"""

import sys


def parse(argv, option, usage):
    """FILE FUNCTION and the value of one --option (None when absent); ValueError says what is wrong."""
    rest, value = [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == option:
            if i + 1 >= len(argv):
                raise ValueError("%s needs a value" % option)
            value = argv[i + 1]
            i += 2
            continue
        if a.startswith(option + "="):
            value = a[len(option) + 1:]
        elif a.startswith("-"):
            raise ValueError("unknown option %s\n%s" % (a, usage))
        else:
            rest.append(a)
        i += 1
    if len(rest) != 2:
        raise ValueError(usage)
    return rest[0], rest[1], value


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
