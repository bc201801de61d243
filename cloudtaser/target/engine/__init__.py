"""The protect engine.

One resumable, per-workload step runner shared by protect, unprotect and finalize, and the
proof that new pods are injected.
"""
