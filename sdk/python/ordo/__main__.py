"""`python -m ordo run|trace|warm ...`: the entry points the ordo binary calls."""

import sys

from ordo._cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
