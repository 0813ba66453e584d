"""The run/store layer: knows nothing of any ML framework."""

import logging

# Every module of mltrail that logs imports this package first: one NullHandler for them all
# (set here, not in ``mltrail/__init__``, which imports nothing it does not need).
logging.getLogger("mltrail").addHandler(logging.NullHandler())
