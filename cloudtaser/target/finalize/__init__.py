"""finalize: remove the Secret references a migrated workload no longer needs (step.py, the
engine step and the run), and, gated by key-level proof, the Secrets themselves (deletion.py).
"""
