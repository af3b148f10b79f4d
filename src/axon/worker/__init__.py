"""Worker processes: the parent-side handle (process.py) and the child-side host (host.py)."""
