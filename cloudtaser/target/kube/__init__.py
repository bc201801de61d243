"""The one Kubernetes client layer.

Session and errors (lightkube), workload listing and patching.
"""
