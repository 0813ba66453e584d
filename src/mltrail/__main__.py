"""``python -m mltrail``: the ``mltrail`` command."""

from __future__ import annotations

from mltrail.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
