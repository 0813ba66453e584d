"""The run/store layer: knows nothing of any ML framework."""
