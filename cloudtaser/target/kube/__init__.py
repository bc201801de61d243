"""The one Kubernetes client layer.

``session`` (kubeconfig, the lightkube client), ``errors`` (the one translation of lightkube /
httpx2 exceptions), ``api`` (get / create / apply / patch / list / delete by kind),
``workloads`` (the engine's concurrent workload reads and patches) and ``identity`` (the
cluster's kube-system UID).
"""
