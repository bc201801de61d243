"""finalize: remove the Secret references a migrated workload no longer needs.

And, gated by key-level proof, the Secrets themselves.
"""
