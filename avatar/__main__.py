"""``python -m avatar SUBCOMMAND ...``: the same as the ``avatar`` command."""

import sys

from avatar.cli import main

if __name__ == "__main__":
    sys.exit(main())
