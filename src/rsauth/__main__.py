"""``python -m rsauth``: the ``rsauth`` command."""

from __future__ import annotations

import sys

from rsauth._cli import main

if __name__ == "__main__":
    sys.exit(main())
