"""The real test bed: an OpenBao dev server and local Kubernetes control planes.

Nothing here fakes vault or cluster behaviour: every helper starts or drives a real process
(``bao server -dev``, etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, Flux's
controllers).

Modules:

- ``process``   -- ``ManagedProcess``: one child in its own session, logged to a file, stopped in
                   ``finally`` (group SIGTERM, then SIGKILL), killed by ``PR_SET_PDEATHSIG`` if
                   the runner dies; ``sweep_leftovers``; free ports; log tails with redaction.
- ``binaries``  -- where the server binaries are and what to do when they are missing
                   (``pytest.fail`` under ``CI``, otherwise ``pytest.skip`` with the install hint).
- ``openbao``   -- ``BaoServer``: ``bao server -dev`` with a file audit device.
- ``pki``       -- a tiny CA (``cryptography``): serving, client and ServiceAccount keys.
- ``cluster``   -- ``Cluster``: etcd + apiserver + KCM + scheduler + kwok with fake nodes.
- ``realnode``  -- ``RealNode``: control plane + containerd + kubelet (pods really run), a local
                   OCI registry, image building without Docker, pods/logs/exec; one per host.
- ``oci``       -- push manifests to an OCI registry as a Flux artifact (Flux's media types).
- ``flux``      -- ``Flux``: Flux's source-controller + kustomize-controller and a local OCI
                   registry against a cluster; sync, forced reconcile, controller restart.
- ``workloads`` -- namespaces, Secrets, Deployments/StatefulSets/DaemonSets from compact specs,
                   TokenRequest, and ``wait_rollout`` with kubectl's rules.

Import it as ``tests.testenv`` (``tests/conftest.py`` puts the repository root on ``sys.path``).
"""

from __future__ import annotations
