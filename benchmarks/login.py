"""Benchmark a pod's vault login: the ``kubernetes`` auth method vs ``jwt`` (issue 31).

One run on the test bed: a local control plane (etcd + kube-apiserver) and an OpenBao dev
server. ``cloudtaser target connect`` configures two mounts for the same cluster, one per
method (``kubernetes``: reviewer token, a TokenReview call per login; ``jwt``: the cluster's
public keys, checked offline). Then ``--logins`` logins per method (default 500) through each
mount's self-test role, with ServiceAccount tokens requested beforehand (a pod's kubelet does
that, not the login). The two methods are interleaved in rounds (``--rounds``), so drift of
the machine during the run hits both alike.

Reported per method: login latency p50 / p99 (one keep-alive connection, as the wrapper has)
and the API-server requests per login, counted from the API server's own metrics
(``apiserver_request_total``: TokenReviews, and every resource request) around each batch of
logins. Goal: zero TokenReviews in jwt mode, and a lower p50 than kubernetes mode.

Usage: ``python -m benchmarks.login [--logins 500] [--rounds 10]``
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from benchmarks._common import cpu_note, dev_server
from cloudtaser.config import ClusterTarget, VaultTarget
from cloudtaser.connect import AuthMethod, ConnectOptions, connect
from cloudtaser.connect.model import SELFTEST_AUDIENCE, SELFTEST_ROLE, SELFTEST_SERVICE_ACCOUNT
from cloudtaser.source.openbao import OpenBaoClient
from cloudtaser.target.kube.session import connect as kube_connect
from tests.testenv.binaries import find_k8s_binaries
from tests.testenv.cluster import Cluster

NAMESPACE = "cloudtaser-bench"
MOUNTS = {AuthMethod.KUBERNETES: "k8s-bench", AuthMethod.JWT: "jwt-bench"}
_SAMPLE = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")


def request_counts(cluster: Cluster) -> tuple[float, float]:
    """``(tokenreviews, resource requests)`` the API server has answered so far (its own
    ``apiserver_request_total``; the scrape itself is a non-resource request, not counted)."""
    text = requests.get(f"{cluster.server}/metrics", timeout=10, **cluster._tls()).text
    reviews = total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if not labels.get("resource"):
            continue
        value = float(match.group(2))
        total += value
        if labels["resource"] == "tokenreviews":
            reviews += value
    return reviews, total


def tokens(client: Any, count: int) -> list[str]:
    """``count`` ServiceAccount tokens of the self-test account, with its audience."""
    out = []
    for _ in range(count):
        req = ServiceAccountToken(
            metadata=ObjectMeta(name=SELFTEST_SERVICE_ACCOUNT, namespace=NAMESPACE),
            spec=TokenRequestSpec(audiences=[SELFTEST_AUDIENCE], expirationSeconds=3600),
        )
        out.append(
            str(client.create(req, SELFTEST_SERVICE_ACCOUNT, namespace=NAMESPACE).status.token)
        )
    return out


def login_batch(
    session: requests.Session, address: str, mount: str, jwts: list[str]
) -> list[float]:
    """Seconds per login, one after the other on one keep-alive connection."""
    times = []
    for jwt in jwts:
        start = time.perf_counter()
        reply = session.post(
            f"{address}/v1/auth/{mount}/login",
            json={"role": SELFTEST_ROLE, "jwt": jwt},
            timeout=30,
        )
        times.append(time.perf_counter() - start)
        if reply.status_code != 200:
            raise SystemExit(f"login through auth/{mount} failed: HTTP {reply.status_code}")
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=500, help="logins per method")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    per_round = max(1, args.logins // args.rounds)
    with tempfile.TemporaryDirectory(prefix="ct-bench-login-") as tmp, dev_server() as bao:
        cluster = Cluster(
            "ct-bench-login",
            Path(tmp),
            nodes=0,
            binaries=find_k8s_binaries(),
            controllers=False,
            kwok=False,
        )
        cluster.start()
        try:
            run(cluster, bao.address, bao.token, args.rounds, per_round)
        finally:
            cluster.stop()


def run(cluster: Cluster, address: str, token: str, rounds: int, per_round: int) -> None:
    target = ClusterTarget(kubeconfig=(str(cluster.kubeconfig),), context=cluster.context)
    with (
        kube_connect(target) as session,
        OpenBaoClient(VaultTarget(address=address, token=token)) as client,
    ):
        for method, mount in MOUNTS.items():
            result = connect(
                session,
                client,
                ConnectOptions(auth_mount=mount, auth_method=method, namespace=NAMESPACE),
            )
            if result.self_test is None or not result.self_test.ok:
                raise SystemExit(f"connect {method} failed its self-test: {result.self_test}")
    kube = cluster.client()
    jwts = {method: tokens(kube, rounds * per_round) for method in MOUNTS}
    latencies: dict[AuthMethod, list[float]] = {m: [] for m in MOUNTS}
    reviews: dict[AuthMethod, float] = dict.fromkeys(MOUNTS, 0.0)
    requests_: dict[AuthMethod, float] = dict.fromkeys(MOUNTS, 0.0)
    http = requests.Session()
    order: list[AuthMethod] = list(MOUNTS)
    for index in range(rounds):
        for method in order if index % 2 == 0 else reversed(order):
            batch = jwts[method][index * per_round : (index + 1) * per_round]
            before = request_counts(cluster)
            latencies[method] += login_batch(http, address, MOUNTS[method], batch)
            after = request_counts(cluster)
            reviews[method] += after[0] - before[0]
            requests_[method] += after[1] - before[1]
    print(
        f"pod login, {rounds * per_round} logins per method in {rounds} interleaved rounds "
        f"({cpu_note()}):"
    )
    rows: list[tuple[str, Callable[[AuthMethod], str]]] = [
        ("p50 latency", lambda m: f"{percentile(latencies[m], 0.50) * 1000:.2f} ms"),
        ("p99 latency", lambda m: f"{percentile(latencies[m], 0.99) * 1000:.2f} ms"),
        ("mean latency", lambda m: f"{statistics.fmean(latencies[m]) * 1000:.2f} ms"),
        ("TokenReviews", lambda m: f"{reviews[m]:.0f}"),
        ("TokenReviews per login", lambda m: f"{reviews[m] / len(latencies[m]):.2f}"),
        ("API-server requests per login", lambda m: f"{requests_[m] / len(latencies[m]):.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"  {'':{width}}  {'kubernetes':>14}  {'jwt':>14}")
    for name, cell in rows:
        print(f"  {name:{width}}  {cell(AuthMethod.KUBERNETES):>14}  {cell(AuthMethod.JWT):>14}")
    p50 = {m: percentile(latencies[m], 0.50) for m in MOUNTS}
    print(
        f"jwt: {reviews[AuthMethod.JWT]:.0f} TokenReviews (goal 0), p50 "
        f"{p50[AuthMethod.JWT] / p50[AuthMethod.KUBERNETES]:.2f}x of kubernetes mode (goal < 1)"
    )


if __name__ == "__main__":
    main()
