"""audit: what a cluster still reads from Kubernetes Secrets.

Collected from the cluster, rendered as a report.
"""
