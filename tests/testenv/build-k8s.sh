#!/usr/bin/env bash
# Build the real Kubernetes test-bed binaries from the Go module proxy only.
#   control plane: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok
#   real node:     kubelet, containerd, containerd-shim-runc-v2, ctr, crane, pause
# Idempotent: each part does nothing when the cache already holds a complete, stamped set.
# The two parts have separate stamps, so a script that only knows the control plane and this one
# never invalidate each other's work.
#
# Environment:
#   CLOUDTASER_K8S_VERSION        Kubernetes version, no leading v   (default 1.36.3)
#   CLOUDTASER_KWOK_VERSION       kwok version                        (default v0.8.0)
#   CLOUDTASER_CONTAINERD_VERSION containerd version                  (default v2.4.2)
#   CLOUDTASER_CRANE_VERSION      go-containerregistry (crane)        (default v0.22.1)
#   CLOUDTASER_TESTENV_NODE       0: skip the real-node binaries      (default 1)
#   CLOUDTASER_FLUX_VERSION       Flux source/kustomize-controller    (default v1.9.6)
#   CLOUDTASER_TESTENV_FLUX       0: skip the Flux controllers, helm and kustomize (default 1)
#   CLOUDTASER_TESTENV_CACHE      cache root (default ~/.cache/cloudtaser-testenv)
# Output: $CACHE/v$KV/bin/* with $CACHE/v$KV/bin/.complete (control plane),
# $CACHE/v$KV/bin/.complete-node (real node) and $CACHE/v$KV/bin/.complete-flux (Flux's
# source-controller and kustomize-controller, built by build-flux.sh; their CRDs in
# $CACHE/v$KV/flux-crds/) as completeness stamps.
# Nothing from Kubernetes is ever written into the repository.
#
# No pipeline here may end before its writer does (`cmd | head -1` under pipefail fails with 141
# whenever `cmd` is still writing when head exits): read whole outputs into variables instead.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KV=${CLOUDTASER_K8S_VERSION:-1.36.3}
KWOK_V=${CLOUDTASER_KWOK_VERSION:-v0.8.0}
CTRD_V=${CLOUDTASER_CONTAINERD_VERSION:-v2.4.2}
CRANE_V=${CLOUDTASER_CRANE_VERSION:-v0.22.1}
CACHE=${CLOUDTASER_TESTENV_CACHE:-$HOME/.cache/cloudtaser-testenv}
OUT=$CACHE/v$KV/bin
SRC=$CACHE/v$KV/src
STAMP="$OUT/.complete"
WANT="k8s=v$KV kwok=$KWOK_V"
BINS="kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok"
NODE_STAMP="$OUT/.complete-node"
PAUSE_SUM=$(sha256sum "$HERE/pause/main.go")
PAUSE_SUM=${PAUSE_SUM:0:12}
NODE_WANT="kubelet=v$KV containerd=$CTRD_V crane=$CRANE_V pause=$PAUSE_SUM"
NODE_BINS="kubelet containerd containerd-shim-runc-v2 ctr crane pause"

stamped() {  # stamped STAMPFILE WANT BINS...
  local stamp=$1 want=$2 b
  shift 2
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  for b in "$@"; do [ -x "$OUT/$b" ] || return 1; done
}

first_line() {  # the first line of a command's output, without a pipe that can SIGPIPE it
  local text
  text=$("$@")
  printf '%s\n' "${text%%$'\n'*}"
}

need_go() {
  command -v go >/dev/null || { echo "testenv: 'go' is not on PATH; install Go >= 1.26 or set CLOUDTASER_TESTENV_BIN to prebuilt binaries" >&2; exit 1; }
  export GOWORK=off GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-local}
}

# The staging-replaced main module that builds k8s.io/kubernetes commands (control plane, kubelet).
prepare_k8s_module() {
mkdir -p "$OUT" "$SRC"
cd "$SRC"
[ -f go.mod ] || go mod init cloudtaser-testenv-build >/dev/null
MINOR=$(echo "$KV" | cut -d. -f2)
SV="v0.${KV#1.}"

# 1) Replace every staging module with its published tag, read from k8s.io/kubernetes's own go.mod.
KGOMOD=$(go mod download -json "k8s.io/kubernetes@v$KV" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
python3 - "$KGOMOD" "$SV" <<'PY'
import re, subprocess, sys
text = open(sys.argv[1]).read()
mods = re.findall(r'^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/', text, re.M)
assert mods, "no staging replaces found"
subprocess.check_call(["go", "mod", "edit"] + [f"-replace={m}={m}@{sys.argv[2]}" for m in mods])
g = re.search(r'^godebug\s+(\S+)', text, re.M)
if g:
    subprocess.check_call(["go", "mod", "edit", f"-godebug={g.group(1)}"])
print(f"testenv: {len(mods)} staging modules replaced with {sys.argv[2]}")
PY
}

k8s_ldflags() {
LDF="-s -w"
for kv in "gitVersion=v$KV" "gitMajor=1" "gitMinor=$MINOR" "gitTreeState=clean" \
          "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
  LDF="$LDF -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
}

build_control_plane() {
start=$(date +%s)
rm -f "$STAMP"
prepare_k8s_module
CMDS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
go get $(for c in $CMDS; do printf 'k8s.io/kubernetes/cmd/%s@v%s ' "$c" "$KV"; done)
EV=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$KGOMOD")
go get "go.etcd.io/etcd/server/v3@$EV"

# 2) Build with version stamping so /version and --version report the real version.
k8s_ldflags
for c in $CMDS; do
  echo "testenv: building $c"
  go build -trimpath -buildvcs=false -ldflags "$LDF" -o "$OUT/$c" "k8s.io/kubernetes/cmd/$c"
done
echo "testenv: building etcd $EV"
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3

# 3) kwok in its own module graph (never inside the k8s module above).
echo "testenv: building kwok $KWOK_V"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_V"

# kwok >= 0.8 has no built-in stages: keep the upstream Stage YAMLs next to the binaries.
KW=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_V/kustomize/stage
mkdir -p "$OUT/../stages"
first=1
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  [ $first = 1 ] || echo '---'
  first=0
  cat "$KW/$f"
done > "$OUT/../stages/kwok-stages.yaml"

"$OUT/kube-apiserver" --version
first_line "$OUT/etcd" --version
echo "$WANT" > "$STAMP"
echo "testenv: built $WANT in $(( $(date +%s) - start ))s into $OUT"
}

# The real node: kubelet (same staging-replaced module as the control plane), containerd + shim +
# ctr and crane (each in its own module graph, `go install pkg@version`), and our pause program.
build_node() {
start=$(date +%s)
rm -f "$NODE_STAMP"
prepare_k8s_module
echo "testenv: building kubelet v$KV"
go get "k8s.io/kubernetes/cmd/kubelet@v$KV"
k8s_ldflags
go build -trimpath -buildvcs=false -ldflags "$LDF" -o "$OUT/kubelet" k8s.io/kubernetes/cmd/kubelet

local tags="no_btrfs no_zfs no_devmapper urfave_cli_no_docs osusergo netgo static_build"
local cpkg=github.com/containerd/containerd/v2
local cldf="-s -w -X $cpkg/version.Version=$CTRD_V -X $cpkg/version.Revision=cloudtaser-testenv"
echo "testenv: building containerd $CTRD_V"
GOBIN="$OUT" go install -trimpath -tags "$tags" -ldflags "$cldf" \
  "$cpkg/cmd/containerd@$CTRD_V" "$cpkg/cmd/ctr@$CTRD_V"
GOBIN="$OUT" go install -trimpath -tags "$tags no_grpc" -ldflags "$cldf" \
  "$cpkg/cmd/containerd-shim-runc-v2@$CTRD_V"
echo "testenv: building crane $CRANE_V"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" \
  "github.com/google/go-containerregistry/cmd/crane@$CRANE_V"

echo "testenv: building pause"
local pdir=$CACHE/v$KV/src-pause
mkdir -p "$pdir"
cp "$HERE/pause/main.go" "$pdir/main.go"
(cd "$pdir" && { [ -f go.mod ] || go mod init cloudtaser-testenv-pause >/dev/null 2>&1; } \
  && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$OUT/pause" .)

first_line "$OUT/kubelet" --version
first_line "$OUT/containerd" --version
echo "$NODE_WANT" > "$NODE_STAMP"
echo "testenv: built $NODE_WANT in $(( $(date +%s) - start ))s into $OUT"
}

if stamped "$STAMP" "$WANT" $BINS; then
  echo "testenv: $WANT cached in $OUT"
else
  need_go
  build_control_plane
fi
if [ "${CLOUDTASER_TESTENV_NODE:-1}" = 0 ]; then
  echo "testenv: real-node binaries skipped (CLOUDTASER_TESTENV_NODE=0)"
elif stamped "$NODE_STAMP" "$NODE_WANT" $NODE_BINS; then
  echo "testenv: $NODE_WANT cached in $OUT"
else
  need_go
  build_node
fi
if [ "${CLOUDTASER_TESTENV_FLUX:-1}" = 0 ]; then
  echo "testenv: Flux controllers skipped (CLOUDTASER_TESTENV_FLUX=0)"
else
  bash "$HERE/build-flux.sh"
  bash "$HERE/build-gitops-tools.sh"
fi
