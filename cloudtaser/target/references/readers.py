"""Secrets possibly read through the Kubernetes API (operators and applications that ``get`` /
``list`` / ``watch`` Secrets: Argo CD's ``argocd-secret``, the Prometheus operator's
Alertmanager configuration). No pod spec names them, yet deleting them breaks their readers.

The question goes to the API server's own authorizer, with SubjectAccessReviews
(``authorization.k8s.io/v1``), for the ServiceAccounts that running pods use:

1. the ServiceAccounts of every pod of the cluster that is not finished (one list of pods,
   all namespaces; at most :data:`MAX_SERVICE_ACCOUNTS` distinct ones);
2. per ServiceAccount, once per run: may it ``get``, ``list`` or ``watch`` secrets in all
   namespaces (ClusterRoleBindings, webhook authorizers)? Then every Secret of every namespace
   is possibly read by it;
3. per scanned namespace and ServiceAccount: may it ``get``/``list``/``watch`` secrets there?
   Then every Secret of the namespace is;
4. per Secret whose name appears in the ``resourceNames`` of a rule on secrets (in any
   ClusterRole or a Role of the namespace; every Secret when those cannot be listed): may the
   ServiceAccount ``get`` that one Secret? (``list`` and ``watch`` restricted by name are not
   asked.)

The subject of each review is ``system:serviceaccount:<ns>:<name>`` with the groups
``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``. At
most :data:`MAX_REVIEWS` reviews per run, :data:`PARALLEL` at a time; over the bound, or when
the pods cannot be listed or a review cannot be created, the namespace's Secrets cannot be
proven unread: that is reported as unreadable, so every Secret is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from cloudtaser.errors import ClusterError
from cloudtaser.target.references.uses import SecretUse, listing_failure
from cloudtaser.target.rollout import dig

if TYPE_CHECKING:
    from cloudtaser.target.kube.workloads import WorkloadAPI

__all__ = ["MAX_REVIEWS", "MAX_SERVICE_ACCOUNTS", "PARALLEL", "ApiReaders", "secret_rule_names"]

MAX_SERVICE_ACCOUNTS: Final = 200
MAX_REVIEWS: Final = 20000
PARALLEL: Final = 16
_VERBS: Final = ("get", "list", "watch")
_RBAC: Final = "/apis/rbac.authorization.k8s.io/v1"


def _review(account: tuple[str, str], verb: str, namespace: str, name: str = "") -> dict[str, Any]:
    sa_ns, sa = account
    attributes = {"verb": verb, "group": "", "version": "v1", "resource": "secrets"}
    if namespace:
        attributes["namespace"] = namespace
    if name:
        attributes["name"] = name
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{sa_ns}:{sa}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_ns}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }


def secret_rule_names(roles: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ``resourceNames`` of every rule of ``roles`` that covers core ``secrets``."""
    names: set[str] = set()
    for role in roles:
        for rule in role.get("rules") or ():
            if not isinstance(rule, Mapping):
                continue
            groups = rule.get("apiGroups") or ()
            resources = rule.get("resources") or ()
            if ("" in groups or "*" in groups) and ("secrets" in resources or "*" in resources):
                names.update(str(n) for n in rule.get("resourceNames") or ())
    return names


def _account(pod: Mapping[str, Any]) -> tuple[str, str]:
    return (
        str(dig(pod, "metadata", "namespace") or ""),
        str(dig(pod, "spec", "serviceAccountName") or "default"),
    )


class ApiReaders:
    """One run's answers (ServiceAccounts, cluster-wide reviews, ClusterRoles) and budget."""

    def __init__(self) -> None:
        self._accounts: list[tuple[str, str]] | None = None
        self._error = ""
        #: ServiceAccount -> the verb it may use on secrets in all namespaces ("": none).
        self._everywhere: dict[tuple[str, str], str] = {}
        self._cluster_names: set[str] | None = None
        self.reviews = 0

    def _ask(self, cluster: WorkloadAPI, bodies: list[dict[str, Any]]) -> list[bool]:
        self.reviews += len(bodies)
        answers = cluster.access_reviews(bodies, parallel=PARALLEL)
        return [bool(dig(a, "status", "allowed")) for a in answers]

    def _load(self, cluster: WorkloadAPI) -> None:
        if self._accounts is not None or self._error:
            return
        try:
            pods, _first = cluster.list_json(
                "/api/v1/pods",
                params={"fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"},
                action="list pods (all namespaces) to find the ServiceAccounts in use",
            )
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            self._error = f"pods (all namespaces; their ServiceAccounts may read Secrets): {exc}"
            return
        accounts = sorted({_account(p) for p in pods})
        if len(accounts) > MAX_SERVICE_ACCOUNTS:
            self._error = (
                f"Secrets read through the API: {len(accounts)} ServiceAccounts run pods, more "
                f"than the scan's bound of {MAX_SERVICE_ACCOUNTS}"
            )
            return
        bodies = [_review(a, verb, "") for a in accounts for verb in _VERBS]
        try:
            allowed = self._ask(cluster, bodies)
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            self._error = f"subjectaccessreviews: {exc}"
            return
        for index, account in enumerate(accounts):
            verbs = [v for j, v in enumerate(_VERBS) if allowed[index * len(_VERBS) + j]]
            self._everywhere[account] = verbs[0] if verbs else ""
        self._accounts = accounts

    def _rule_names(self, cluster: WorkloadAPI, namespace: str) -> set[str] | None:
        """Secret names in ``resourceNames`` rules (``None``: the roles cannot be listed)."""
        try:
            if self._cluster_names is None:
                roles, _ = cluster.list_json(f"{_RBAC}/clusterroles", action="list clusterroles")
                self._cluster_names = secret_rule_names(roles)
            roles, _ = cluster.list_json(
                f"{_RBAC}/namespaces/{namespace}/roles", action=f"list roles in {namespace}"
            )
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            return None
        return self._cluster_names | secret_rule_names(roles)

    def uses(
        self, cluster: WorkloadAPI, namespace: str, secrets: Sequence[str]
    ) -> tuple[list[SecretUse], list[str]]:
        """The ServiceAccounts of running pods that may read each Secret of ``namespace``, and
        why that could not be answered (then every Secret must be kept)."""
        self._load(cluster)
        if self._accounts is None:
            return [], [self._error]
        uses: list[SecretUse] = []

        def add(secret: str, account: tuple[str, str], verb: str, where: str) -> None:
            uses.append(
                SecretUse(
                    secret,
                    "ServiceAccount",
                    f"{account[0]}/{account[1]}",
                    "apiReader",
                    f"RBAC lets it {verb} {where}, and a running pod uses it: possibly read "
                    "through the API; ask the application's owner before deleting",
                )
            )

        rest: list[tuple[str, str]] = []
        for account in self._accounts:
            verb = self._everywhere.get(account, "")
            if verb:
                for secret in secrets:
                    add(secret, account, verb, "secrets in all namespaces")
            else:
                rest.append(account)
        if not secrets or not rest:
            return uses, []
        names = self._rule_names(cluster, namespace)
        candidates = [s for s in secrets if names is None or s in names]
        needed = len(rest) * (len(_VERBS) + len(candidates))
        if self.reviews + needed > MAX_REVIEWS:
            return uses, [
                f"Secrets read through the API: {needed} more SubjectAccessReviews needed, over "
                f"the run's bound of {MAX_REVIEWS}"
            ]
        try:
            allowed = self._ask(
                cluster, [_review(a, verb, namespace) for a in rest for verb in _VERBS]
            )
            by_name: list[tuple[tuple[str, str], str]] = []
            for index, account in enumerate(rest):
                verbs = [v for j, v in enumerate(_VERBS) if allowed[index * len(_VERBS) + j]]
                if verbs:
                    for secret in secrets:
                        add(secret, account, verbs[0], f"secrets in namespace {namespace}")
                else:
                    by_name.extend((account, s) for s in candidates)
            answers = self._ask(cluster, [_review(a, "get", namespace, s) for a, s in by_name])
        except ClusterError as exc:
            if not listing_failure(exc):
                raise
            return uses, [f"subjectaccessreviews: {exc}"]
        for (account, secret), yes in zip(by_name, answers, strict=True):
            if yes:
                add(secret, account, "get", f"Secret {secret} (resourceNames)")
        return uses, []
