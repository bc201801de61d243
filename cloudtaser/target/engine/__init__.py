"""The protect engine.

One resumable, per-workload step runner shared by protect, unprotect and finalize (core), the
proof that new pods are injected (injection), and what the steps share so their workflows never
import each other: the plan's mapping against the live template (consumption) and the Secret
references finalize removes and unprotect puts back (secret_refs).
"""
