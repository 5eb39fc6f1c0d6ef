"""The replay worker: one bucket of a replay plan folded into the target table (handler.py)."""
