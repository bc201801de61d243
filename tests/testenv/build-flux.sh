#!/usr/bin/env bash
# Build Flux's source-controller, kustomize-controller and helm-controller from the Go module
# proxy only, and keep their CRDs (from the same module copies) next to them. Called by
# build-k8s.sh; idempotent.
#
# Environment (defaults in build-k8s.sh / noxfile.py):
#   CLOUDTASER_FLUX_VERSION       source- and kustomize-controller version   (default v1.9.6)
#   CLOUDTASER_FLUX_HELM_VERSION  helm-controller version (default v1.4.5, set here)
#   CLOUDTASER_TESTENV_CACHE      cache root (default ~/.cache/cloudtaser-testenv)
#   CLOUDTASER_K8S_VERSION        the key of the cache directory, as for the Kubernetes binaries
#   CLOUDTASER_CRANE_VERSION      crane, the local OCI registry (`crane registry serve`)
# Output: $CACHE/v$KV/bin/{source-controller,kustomize-controller,helm-controller,crane},
# $CACHE/v$KV/flux-crds/*.yaml, stamp $CACHE/v$KV/bin/.complete-flux.
#
# Why the module edits (found building v1.9.6 with Go 1.26; v1.10.x needs Go 1.27):
# - the module zip lacks the nested ./api module its go.mod replaces: drop that replace, the
#   require line already names the published api version;
# - source-controller v1.9.6 requires github.com/fluxcd/pkg/artifact v0.18.3, which the proxy
#   refuses (403); v0.18.1 builds.
# helm-controller has its own version line: the proxy serves v1.4.0, v1.4.3 and v1.4.5 whole
# (v1.4.4's and v1.5.x's go.mod are refused, 403), so v1.4.5 (Flux 2.7's line; it reads the
# OCIRepository through source.toolkit.fluxcd.io/v1, which source-controller v1.9.6 serves). Its
# module gets the same one edit (drop the ./api replace); nothing else is needed with Go 1.26.
set -euo pipefail
KV=${CLOUDTASER_K8S_VERSION:-1.36.3}
FLUX_V=${CLOUDTASER_FLUX_VERSION:-v1.9.6}
HELM_CTRL_V=${CLOUDTASER_FLUX_HELM_VERSION:-v1.4.5}
CRANE_V=${CLOUDTASER_CRANE_VERSION:-v0.22.1}
CACHE=${CLOUDTASER_TESTENV_CACHE:-$HOME/.cache/cloudtaser-testenv}
OUT=$CACHE/v$KV/bin
CRDS=$CACHE/v$KV/flux-crds
STAMP="$OUT/.complete-flux"
WANT="source-controller=$FLUX_V kustomize-controller=$FLUX_V helm-controller=$HELM_CTRL_V"
WANT="$WANT crane=$CRANE_V"
CONTROLLERS="source-controller kustomize-controller helm-controller"

version_of() {
  if [ "$1" = helm-controller ]; then echo "$HELM_CTRL_V"; else echo "$FLUX_V"; fi
}

complete() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] || return 1
  for b in $CONTROLLERS crane; do [ -x "$OUT/$b" ] || return 1; done
  [ -f "$CRDS/source.toolkit.fluxcd.io_ocirepositories.yaml" ] || return 1
  [ -f "$CRDS/kustomize.toolkit.fluxcd.io_kustomizations.yaml" ] || return 1
  [ -f "$CRDS/helm.toolkit.fluxcd.io_helmreleases.yaml" ]
}
if complete; then
  echo "testenv: $WANT cached in $OUT"
  exit 0
fi
command -v go >/dev/null || { echo "testenv: 'go' is not on PATH; install Go >= 1.26" >&2; exit 1; }
export GOWORK=off GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}
start=$(date +%s)
# a controller the old stamp lists at the wanted version (binary and CRDs there) is kept: a
# stamp that only lacks a newly added controller builds that one
OLD=" $(cat "$STAMP" 2>/dev/null || true) "
rm -f "$STAMP"
mkdir -p "$OUT" "$CRDS"
SRC=$CACHE/v$KV/src-flux
MODCACHE=$(go env GOMODCACHE)
for c in $CONTROLLERS; do
  mod=github.com/fluxcd/$c
  v=$(version_of "$c")
  if [[ "$OLD" == *" $c=$v "* ]] && [ -x "$OUT/$c" ] && [ -d "$SRC/$c/config/crd/bases" ]; then
    echo "testenv: $c $v kept"
    cp "$SRC/$c"/config/crd/bases/*.yaml "$CRDS/"
    continue
  fi
  go mod download "$mod@$v"
  dir=$SRC/$c
  rm -rf "$dir"
  mkdir -p "$SRC"
  cp -r "$MODCACHE/$mod@$v" "$dir"
  chmod -R u+w "$dir"
  (
    cd "$dir"
    go mod edit -dropreplace "$mod/api"
    if [ "$c" = source-controller ] && grep -q 'github.com/fluxcd/pkg/artifact v0.18.3' go.mod; then
      go mod edit -require github.com/fluxcd/pkg/artifact@v0.18.1
    fi
    echo "testenv: building $c $v"
    # built aside, then renamed: a test bed running the old binary is not disturbed
    GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -buildvcs=false -ldflags "-s -w" \
      -o "$OUT/$c.new" .
    mv -f "$OUT/$c.new" "$OUT/$c"
  )
  cp "$dir"/config/crd/bases/*.yaml "$CRDS/"
done
if [ ! -x "$OUT/crane" ]; then
  echo "testenv: building crane $CRANE_V"
  GOBIN="$OUT" go install -trimpath -ldflags "-s -w" \
    "github.com/google/go-containerregistry/cmd/crane@$CRANE_V"
fi
echo "$WANT" > "$STAMP"
echo "testenv: built $WANT in $(( $(date +%s) - start ))s into $OUT"
