#!/usr/bin/env bash
# Build the two GitOps renderers the tests check emitted changes with, from the Go module proxy
# only: `helm` (Helm v4: `helm template`, `helm install`, OCI chart push/pull) and `kustomize`
# (`kustomize build`). Called by build-k8s.sh after build-flux.sh; idempotent.
#
# Environment (defaults here / in noxfile.py):
#   CLOUDTASER_HELM_VERSION       helm.sh/helm/v4 version                        (default v4.3.2)
#   CLOUDTASER_KUSTOMIZE_VERSION  sigs.k8s.io/kustomize/kustomize/v5 version     (default v5.8.2)
#   CLOUDTASER_TESTENV_CACHE      cache root (default ~/.cache/cloudtaser-testenv)
#   CLOUDTASER_K8S_VERSION        the key of the cache directory, as for the Kubernetes binaries
# Output: $CACHE/v$KV/bin/{helm,kustomize}, stamp $CACHE/v$KV/bin/.complete-gitops-tools.
#
# Why these versions: kustomize v5.8.3 needs Go 1.27 (the test bed has Go 1.26); v5.8.2 is the
# newest that builds with it. Both modules build with `go install pkg@version` (no replaces).
set -euo pipefail
KV=${CLOUDTASER_K8S_VERSION:-1.36.3}
HELM_V=${CLOUDTASER_HELM_VERSION:-v4.3.2}
KUSTOMIZE_V=${CLOUDTASER_KUSTOMIZE_VERSION:-v5.8.2}
CACHE=${CLOUDTASER_TESTENV_CACHE:-$HOME/.cache/cloudtaser-testenv}
OUT=$CACHE/v$KV/bin
STAMP="$OUT/.complete-gitops-tools"
WANT="helm=$HELM_V kustomize=$KUSTOMIZE_V"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$OUT/helm" ] && [ -x "$OUT/kustomize" ]; then
  echo "testenv: $WANT cached in $OUT"
  exit 0
fi
command -v go >/dev/null || { echo "testenv: 'go' is not on PATH; install Go >= 1.26" >&2; exit 1; }
export GOWORK=off GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}
start=$(date +%s)
rm -f "$STAMP"
mkdir -p "$OUT"
echo "testenv: building helm $HELM_V"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_V"
echo "testenv: building kustomize $KUSTOMIZE_V"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_V"
echo "$WANT" > "$STAMP"
echo "testenv: built $WANT in $(( $(date +%s) - start ))s into $OUT"
