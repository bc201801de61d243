"""audit: what a cluster still reads from Kubernetes Secrets.

``collect`` (the report's Structs, collected from the cluster) and ``render`` (its JSON, text
and HTML forms).
"""
